"""Durations as seconds: ``"500ms"``, ``"10s"``, ``"1min"``, a number or a timedelta.

Every part of fusionkit that takes a time span (window sizes, a keyed state's ``ttl``, a
join's ``within``, a source's ``max_future``, the magic's ``--timeout``) reads it here, so
one spelling works everywhere.
"""

from __future__ import annotations

import datetime
import numbers
import re

__all__ = ["parse_duration"]

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
          "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-z]*)\s*$")


def parse_duration(value: float | int | str | datetime.timedelta) -> float:
    """Seconds from a number, a timedelta, or a string such as ``"10s"``, ``"500ms"``, ``"1min"``.

    Units: ``us``, ``ms``, ``s``/``sec``, ``m``/``min``, ``h``, ``d``; a bare number is seconds.

    Examples
    --------
    >>> parse_duration("500ms"), parse_duration("1min"), parse_duration(2), parse_duration("1.5 h")
    (0.5, 60.0, 2.0, 5400.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, datetime.timedelta):  # pandas.Timedelta too
        return value.total_seconds()
    m = _DURATION.match(str(value).lower())
    if not m or m.group(2) not in ("", *_UNITS):
        raise ValueError(f"not a duration: {value!r} (use seconds, or e.g. '10s', '500ms', "
                         f"'1min'; units are {', '.join(_UNITS)})")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]
