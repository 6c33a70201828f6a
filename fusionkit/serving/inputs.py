"""Turning request rows into a feature frame, or a 4xx with a message that says why.

Rows are counted before anything is built from them: an object of columns of a million
rows, or one long column beside scalars pandas would repeat down it, is refused (413) at
the cost of a ``len``, not of a million-row DataFrame.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from fusionkit.streaming.validate import Schema


class BadRequest(Exception):
    """A request the serve stage refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def count_rows(rows: Any) -> int:
    """How many rows a request's ``rows`` make, without building them: a list of records
    counts its items; an object of columns its longest column (pandas repeats a single
    value down the column, so one long column makes every column that long), or the keys
    of its columns that are objects (pandas makes one row per key of any of them).

    Examples
    --------
    >>> count_rows([{"a": 1}, {"a": 2}])
    2
    >>> count_rows({"a": [1, 2, 3], "b": "x"})
    3
    >>> count_rows({"a": 1})
    1
    >>> count_rows({"a": {"x": 1, "y": 2}, "b": {"z": 3}})
    3
    """
    if isinstance(rows, dict):
        keyed = [v for v in rows.values() if isinstance(v, dict)]
        longest = max((len(v) for v in rows.values() if _sized_column(v)), default=int(bool(rows)))
        return max(longest, len(set().union(*keyed))) if keyed else longest
    try:
        return len(rows)
    except TypeError:
        return 0  # not rows at all: parsing them says why


def _sized_column(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)


def check_rows(rows: Any, max_rows: int) -> None:
    """Refuse (413) more than ``max_rows`` rows, counted before anything is built."""
    n = count_rows(rows)
    if n > max_rows:
        raise BadRequest(413, f"too many rows: {n} > {max_rows} per request")



def check_records(rows: list[Any], schema: Schema, max_rows: int) -> list[dict[str, Any]]:
    """Rows (a list of records) checked against the model's features, value by value, and
    cut down to those features; bad input raises ``BadRequest`` with the same messages as
    ``parse_rows``.

    Plain Python on purpose: a request of a few rows costs microseconds here, where building
    and validating a DataFrame costs milliseconds.

    Examples
    --------
    >>> s = Schema({"price": "number", "device": "string"})
    >>> check_records([{"price": 2, "device": "mobile", "extra": 1}], s, 10)
    [{'price': 2, 'device': 'mobile'}]
    >>> check_records([{"price": 2, "device": 5}], s, 10)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: row 0: wrong type in 'device': 5
    """
    check_rows(rows, max_rows)
    if len(rows) == 0:
        raise BadRequest(400, "no rows to predict")
    if not all(isinstance(r, dict) for r in rows):
        raise BadRequest(400, "rows must be a list of objects (one per event)")
    columns = schema.columns
    missing = [c for c in columns if not any(c in r for r in rows)]
    if missing:
        raise BadRequest(400, f"missing feature(s): {', '.join(map(repr, missing))}")
    out = []
    items = list(columns.items())
    for i, row in enumerate(rows):
        clean = {}
        for col, kind in items:
            v = row.get(col)
            t = type(v)
            # what JSON gives for a well-formed row, accepted as it is
            if t is str and kind == "string" or t is int and kind in _NUMBERS and -_BIG < v < _BIG \
                    or t is float and kind == "number" and v - v == 0.0:
                clean[col] = v
            elif v is None:
                if col not in schema.nullable:
                    raise BadRequest(400, f"row {i}: missing value in {col!r}")
                clean[col] = math.nan if kind in _NUMBERS else None
            else:
                clean[col] = _value(v, kind, col, i)
        out.append(clean)
    return out


_NUMBERS = ("number", "integer")
_BIG = 1e300  # an integer beyond this is refused like infinity


def _value(v: Any, kind: str, col: str, i: int) -> Any:
    """One value as its column's kind wants it, or ``BadRequest``."""
    t = type(v)
    if kind in ("number", "integer"):
        if t is not int and t is not float and (
                isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real)):
            raise _wrong(v, col, i)
        try:
            f = float(v)
        except OverflowError:  # an integer beyond any float
            f = math.inf
        if not math.isfinite(f) or abs(f) >= _BIG:
            raise BadRequest(400, f"row {i}: non-finite value in {col!r}")
        if kind == "number":
            return f
        if isinstance(v, numbers.Integral):
            return int(v)
        if f.is_integer():
            return int(f)
        raise BadRequest(400, f"row {i}: wrong type in {col!r}: not an integer")
    if kind == "string":
        if isinstance(v, str):
            return v
        raise _wrong(v, col, i)
    if kind == "bool":
        if isinstance(v, bool | np.bool_) or (isinstance(v, numbers.Real) and v in (0, 1)):
            return bool(v)
        raise _wrong(v, col, i)
    return v


def _wrong(v: Any, col: str, i: int) -> BadRequest:
    return BadRequest(400, f"row {i}: wrong type in {col!r}: {v!r}"[:200])


def parse_rows(rows: Any, schema: Schema | None, max_rows: int) -> pd.DataFrame:
    """Rows (a list of records or a dict of columns) as a DataFrame with the features a model
    learned from; bad input raises ``BadRequest``.

    Examples
    --------
    >>> s = Schema({"price": "number"})
    >>> parse_rows([{"price": 1.5}], s, 10)["price"].tolist()
    [1.5]
    >>> parse_rows([{"price": "x"}], s, 10)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: row 0: wrong type in 'price': 'x'
    >>> parse_rows([{"price": True}], s, 10)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: row 0: wrong type in 'price': True (expected a number)
    """
    check_rows(rows, max_rows)  # before a frame of them is built
    if isinstance(rows, pd.DataFrame):
        frame = rows
    elif isinstance(rows, dict):
        try:
            frame = pd.DataFrame(rows)
        except ValueError as exc:
            raise BadRequest(400, f"columns of different lengths: {exc}") from None
    elif isinstance(rows, list):
        if rows and not all(isinstance(r, dict) for r in rows):
            raise BadRequest(400, "rows must be a list of objects (one per event)")
        frame = pd.DataFrame.from_records(rows)
    else:
        raise BadRequest(400, "rows must be a list of objects or an object of columns")
    if len(frame) == 0:
        raise BadRequest(400, "no rows to predict")
    if len(frame) > max_rows:  # counted above; checked again on what was built
        raise BadRequest(413, f"too many rows: {len(frame)} > {max_rows} per request")
    if schema is None:
        return frame
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise BadRequest(400, f"missing feature(s): {', '.join(map(repr, missing))}")
    frame = frame.reset_index(drop=True)
    _check_column_types(frame, schema)
    good, bad, reasons = schema.split(frame)
    if len(bad):
        first = int(bad.index[0])
        raise BadRequest(400, f"row {first}: {reasons.iloc[0]}")
    return good


_EXPECTED = {"number": "a number", "integer": "an integer", "string": "a string"}


def _check_column_types(frame: pd.DataFrame, schema: Schema) -> None:
    """Refuse whole columns of the wrong type that value-level validation lets through.

    A JSON column that is all numbers where the model learned strings (``"device": 5``), or
    all booleans where it learned numbers, parses into a well-typed column of the wrong kind.
    """
    for col, kind in schema.columns.items():
        s = frame[col]
        numeric = pd.api.types.is_numeric_dtype(s)
        boolean = pd.api.types.is_bool_dtype(s)
        wrong = (kind == "string" and (numeric or boolean)) or (
            kind in ("number", "integer") and boolean)
        if not wrong:
            continue
        present = s.notna().to_numpy()
        if present.any():
            first = int(present.argmax())
            value = s.iloc[first]
            value = value.item() if hasattr(value, "item") else value
            raise BadRequest(400, f"row {first}: wrong type in {col!r}: {value!r} "
                                  f"(expected {_EXPECTED[kind]})")
