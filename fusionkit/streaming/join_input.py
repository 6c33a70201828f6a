"""What of a batch an interval join can take: each event needs a finite event time and a
key of the join's key type (int or str; the first good key fixes it). The others are dead
letters, one ``_reason`` per row.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from fusionkit.batch import EVENT_TIME

__all__ = ["REASON", "Checked", "check"]

REASON = "_reason"


@dataclasses.dataclass(frozen=True)
class Checked:
    """A batch checked: the good rows, their keys and event times, the dead rows (with a
    ``_reason`` column; None if none), and the key type once known."""

    good: pd.DataFrame
    keys: np.ndarray
    t: np.ndarray
    dead: pd.DataFrame | None
    kind: type | None


def check(batch: pd.DataFrame, side: str, on: str, kind: type | None) -> Checked:
    """Check the ``side`` ("left" or "right") events of ``batch`` for key column ``on``;
    ``kind`` is the key type so far (None: the first good key fixes it)."""
    n = len(batch)
    reasons = np.full(n, None, dtype=object)
    if EVENT_TIME not in batch.columns:
        reasons[:] = f"{side} event has no {EVENT_TIME!r} column"
        t = np.full(n, np.nan)
    else:
        t = _times(batch[EVENT_TIME])
        bad = ~np.isfinite(t)
        if bad.any():
            shown = batch[EVENT_TIME].to_numpy(dtype=object)[bad]
            reasons[bad] = [f"{side} event time is not a finite time: {v!r}" for v in shown]
    if on not in batch.columns:
        reasons[reasons == None] = f"{side} event has no key column {on!r}"  # noqa: E711
        keys = np.full(n, None, dtype=object)
    else:
        free = reasons == None  # noqa: E711
        keys, why, kind = _keys(batch[on], side, on, kind, free)
        reasons[free] = why[free]
    bad = reasons != None  # noqa: E711
    if not bad.any():
        return Checked(batch, keys, t, None, kind)
    ok = ~bad
    dead = batch[bad].assign(**{REASON: reasons[bad].astype(str)})
    return Checked(batch[ok], keys[ok], t[ok], dead, kind)


def _keys(s: pd.Series, side: str, on: str, expected: type | None, usable: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, type | None]:
    """Keys as Python objects, and a reason per row for the bad ones (else None). The
    first good key of a ``usable`` row (its time is good) fixes the type of keys
    (``expected``, returned)."""
    n = len(s)
    why = np.full(n, None, dtype=object)
    dt = s.dtype
    if isinstance(dt, np.dtype) and dt.kind in "iu":
        keys, kinds, kind = np.empty(n, dtype=object), None, int
        keys[:] = s.tolist()
    elif isinstance(dt, pd.StringDtype):
        keys = s.to_numpy(dtype=object, na_value=None)
        kind, kinds = str, None
        null = pd.isna(s).to_numpy()
        why[null] = f"{side} event has a null key"
    else:
        keys = s.to_numpy(dtype=object) if not (isinstance(dt, np.dtype) and dt.kind == "f") \
            else s.to_numpy()
        keys, kinds, why = _object_keys(keys, side, why)
        kind = None
    if kinds is None:  # one type for the column
        good = why == None  # noqa: E711
        if expected is None and (good & usable).any():
            expected = kind
        if expected is not None and kind is not expected:
            why[good] = f"{side} event key {on!r} is {kind.__name__}, expected " \
                        f"{expected.__name__}"
    else:
        good = why == None  # noqa: E711
        if expected is None and (good & usable).any():
            expected = kinds[np.argmax(good & usable)]
        wrong = good & (kinds != expected)
        if wrong.any():
            why[wrong] = [f"{side} event key {on!r} is {type(k).__name__} {k!r}, "
                          f"expected {expected.__name__}" for k in keys[wrong]]
    return keys, why, expected


def _times(s: pd.Series) -> np.ndarray:
    """Event times as float seconds (NaN where not a time)."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ns = s.to_numpy("datetime64[ns]").astype("int64").astype("float64")
        return np.where(s.isna().to_numpy(), np.nan, ns / 1e9)
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iuf":
        return s.to_numpy("float64")
    if pd.api.types.is_bool_dtype(s.dtype):
        return np.full(len(s), np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy("float64", na_value=np.nan)


def _object_keys(values: np.ndarray, side: str, why: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys of a float or object column, one by one: integral floats are ints, strings
    stay; nulls and other types get a reason. Returns keys, their types, reasons."""
    keys = np.empty(len(values), dtype=object)
    kinds = np.empty(len(values), dtype=object)
    for i, v in enumerate(values.tolist()):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            why[i] = f"{side} event has a null key"
        elif isinstance(v, str):
            keys[i], kinds[i] = v, str
        elif isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_):
            keys[i], kinds[i] = int(v), int
        elif isinstance(v, float) and v.is_integer():
            keys[i], kinds[i] = int(v), int
        else:
            why[i] = f"{side} event key is {type(v).__name__} {v!r}, not an int or a string"
    return keys, kinds, why
