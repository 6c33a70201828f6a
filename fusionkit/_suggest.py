"""One way to say "did you mean": the closest known name to a mistyped one (difflib)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: object, choices: Iterable[object], cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word`` (both as text), or None if none is close enough.

    >>> closest("lable", ["label", "price"])
    'label'
    >>> closest("zzz", ["label"]) is None
    True
    """
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: object, choices: Iterable[object], form: str = " Did you mean {!r}?") -> str:
    """``form`` filled with the closest choice, or an empty string: the tail of a message.

    >>> did_you_mean("ctx", ["ctr", "clicks"])
    " Did you mean 'ctr'?"
    >>> did_you_mean("ctx", ["ctr"], "; did you mean {}?")
    '; did you mean ctr?'
    >>> did_you_mean("zzz", ["ctr"])
    ''
    """
    close = closest(word, choices)
    return form.format(close) if close is not None else ""
