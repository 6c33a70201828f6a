"""Stage and model names: they become file and folder names under the storage folder
(``models/<name>/``, ``<name>.<slot>.bin`` in checkpoints), so only names that are safe as
one path component are accepted, at definition."""

from __future__ import annotations

import re

from fusionkit.errors import InvalidNameError

MAX_LENGTH = 64
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def check_name(name: object, what: str = "stage") -> str:
    """Return ``name`` if it is 1 to 64 ASCII letters, digits, ``-``, ``_`` or ``.``, not
    starting with ``.`` or ``-``; else raise ``InvalidNameError``.

    >>> check_name("ctr-api")
    'ctr-api'
    >>> check_name("../x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fusionkit.errors.InvalidNameError: stage name '../x' cannot be used: ...
    """
    if not isinstance(name, str) or len(name) > MAX_LENGTH or not _NAME.fullmatch(name):
        raise InvalidNameError(
            f"{what} name {name!r} cannot be used: a name is 1 to {MAX_LENGTH} letters, digits, "
            f"'-', '_' or '.' (not starting with '.' or '-'), e.g. 'ctr-api', since it names "
            f"files under the storage folder")
    return name
