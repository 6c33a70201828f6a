"""Optional dependencies, imported on first use: a connector's client library is needed only
by those who use it (``pip install 'fusionkit[kafka]'``), so fusionkit imports it when the
connector starts, and its absence is an error that says which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from fusionkit.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str, what: str, package: str | None = None) -> ModuleType:
    """The module ``module``, imported; if it cannot be, a
    :class:`~fusionkit.errors.MissingDependencyError` (an ``ImportError``) saying that
    ``what`` (what needs it, a plural subject) needs the ``package`` (the name pip installs,
    by default ``module``) and which extra of fusionkit brings it.

    >>> require("json", "none", "the examples").__name__
    'json'
    >>> require("fusionkit_no_such_module", "kafka", "the Kafka source and sink",
    ...         "confluent-kafka")
    Traceback (most recent call last):
    ...
    fusionkit.errors.MissingDependencyError: the Kafka source and sink need the 'confluent-kafka' package: pip install 'fusionkit[kafka]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(f"{what} need the {package or module!r} package: "
                                     f"pip install 'fusionkit[{extra}]'") from exc
