"""Turning request rows into a feature frame, or a 4xx with a message that says why."""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusionkit.streaming.validate import Schema


class BadRequest(Exception):
    """A request the serve stage refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
    """
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
    if len(frame) > max_rows:
        raise BadRequest(413, f"too many rows: {len(frame)} > {max_rows} per request")
    if schema is None:
        return frame
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise BadRequest(400, f"missing feature(s): {', '.join(map(repr, missing))}")
    frame = frame.reset_index(drop=True)
    good, bad, reasons = schema.split(frame)
    if len(bad):
        first = int(bad.index[0])
        raise BadRequest(400, f"row {first}: {reasons.iloc[0]}")
    return good
