"""What a serve stage writes to its logs: each answered row, and each feedback row.

With ``fk.serve(..., log="served")`` every row a replica answers becomes a line of the
``served`` stream's log (``fusionkit.sources.logfiles``) before the answer leaves: its
``request_id`` (the row's own, or one the replica makes and returns), the features as the
replica validated them, ``_prediction``, ``_proba`` (when the model gives one), ``_model``,
``_version``, ``_role`` (``primary``, ``canary`` or ``shadow``: see
``fusionkit.serving.routing``), ``_replica`` and ``_event_time`` (when it was answered). A
shadow model's answer to a request is a row of its own, with the request's id. The model's outputs
and the serving details start with ``_`` so that a train stage learning from the served
rows without a ``features=`` list never takes the served prediction for a feature (an id
column is left out the same way). With ``feedback="clicks-http"``, ``POST
<route>/feedback`` takes ``{"request_id": ..., "label": ...}`` rows into the
``clicks-http`` stream's log the same way.

Cost, measured with ``benchmarks/served_log.py`` (2 cores under a load average of ~55,
one replica, sequential HTTP requests through Serve's proxy, 2,400 each way, interleaved
in one run): p50 10.71 ms without the log, 9.87 ms with it for 1-row requests (ratio
0.92), 14.20 ms and 13.98 ms for 100 rows (0.98): below the noise of the machine.
``LogWriter.append`` alone takes 0.01 ms for a 1-row request, 0.56 ms for 100 rows (the
ids are drawn at once and the lines encoded with one encoder: before that, 100 rows cost
a p50 ratio of 1.19 in the same benchmark). One write per request, no fsync.

A row a replica wrote is in the log even if the replica dies before its answer leaves
(at least once): a client asking again then gets another row, with a new id if the replica
made it.
"""

from __future__ import annotations

import math
import os
from typing import Any

from fusionkit.batch import EVENT_TIME
from fusionkit.serving.inputs import BadRequest, check_rows
from fusionkit.streaming.validate import Schema

REQUEST_ID = "request_id"
LABEL = "label"
MAX_ID = 256  # characters of a request id
SERVED_COLUMNS = ("_prediction", "_proba", "_model", "_version", "_role", "_replica")
# what the served and feedback streams check of their events: the replica validated the
# rest already, and a nullable feature or a NaN probability must not set a served row aside
LOGGED_SCHEMA = Schema({REQUEST_ID: "string"})


def new_ids(n: int) -> list[str]:
    """``n`` request ids the replica makes: 32 random hex digits each (128 bits, unique
    without coordination), drawn at once: a ``uuid4`` per row costs 10x more."""
    digits = os.urandom(16 * n).hex()
    return [digits[i:i + 32] for i in range(0, 32 * n, 32)]


def _check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise BadRequest(400, f"{where}: request_id must be a non-empty string of at most "
                              f"{MAX_ID} characters, got {value!r}"[:200])
    return value


def request_ids(rows: Any, n: int) -> list[str]:
    """The ``request_id`` of each of ``n`` request rows (a list of records or an object of
    columns), made where a row has none; a given id that is not a string is refused (400).

    >>> ids = request_ids([{"request_id": "a1", "x": 1}, {"x": 2}], 2)
    >>> ids[0], len(ids[1])
    ('a1', 32)
    >>> request_ids({"x": [1, 2], "request_id": ["a", "b"]}, 2)
    ['a', 'b']
    >>> request_ids([{"request_id": 7}], 1)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: row 0: request_id must be a non-empty string of at most 256 characters, got 7
    """
    if isinstance(rows, dict):
        given = rows.get(REQUEST_ID)
        if given is None:
            column: list[Any] = [None] * n
        elif isinstance(given, list) and len(given) == n:
            column = given
        elif isinstance(given, str) and n == 1:
            column = [given]
        else:
            raise BadRequest(400, f"request_id must be a column of {n} strings, one per row")
    else:
        column = [r.get(REQUEST_ID) if isinstance(r, dict) else None for r in rows]
    missing = [i for i, v in enumerate(column) if v is None]
    made = iter(new_ids(len(missing)))
    return [next(made) if v is None else _check_id(v, f"row {i}") for i, v in enumerate(column)]


def served_records(ids: list[str], features: list[dict[str, Any]], predictions: list[Any],
                   proba: list[Any] | None, model: str, version: int | None, replica: str,
                   t: float, role: str = "primary") -> list[dict[str, Any]]:
    """One log record per answered row (see the module's docstring for the columns).

    >>> served_records(["a"], [{"x": 1.0}], [True], [0.8], "ctr", 3, "r0", 10.0)
    [{'request_id': 'a', 'x': 1.0, '_prediction': True, '_proba': 0.8, '_model': 'ctr', '_version': 3, '_role': 'primary', '_replica': 'r0', '_event_time': 10.0}]
    """
    out = []
    for i, row in enumerate(features):
        rec = {REQUEST_ID: ids[i], **row}
        rec["_prediction"] = predictions[i]
        if proba is not None:
            rec["_proba"] = proba[i]
        rec["_model"], rec["_version"], rec["_role"] = model, version, role
        rec["_replica"] = replica
        rec[EVENT_TIME] = t
        out.append(rec)
    return out


def column_records(rows: Any) -> list[Any]:
    """An object of columns as a list of records (what routing by row needs); a list as is.

    >>> column_records({"x": [1, 2], "user_id": ["a", "b"]})
    [{'x': 1, 'user_id': 'a'}, {'x': 2, 'user_id': 'b'}]
    """
    if not isinstance(rows, dict):
        return rows
    columns = {k: v if isinstance(v, list) else [v] for k, v in rows.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise BadRequest(400, "the columns of the request have different lengths")
    n = lengths.pop() if lengths else 0
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def number_columns(schema: Any) -> list[str]:
    """The features a model takes as numbers (``"number"``): logged as floats, so an
    integer sent for one (``2`` for ``2.0``) does not make the served stream's column
    integers in one batch and floats in the next."""
    columns = getattr(schema, "columns", None) or {}
    return [c for c, kind in columns.items() if kind == "number"]


def as_floats(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """``rows`` with the integers of ``columns`` as floats (copies only the rows changed).

    >>> as_floats([{"x": 2, "d": "m"}, {"x": 2.5, "d": "t"}], ["x"])
    [{'x': 2.0, 'd': 'm'}, {'x': 2.5, 'd': 't'}]
    """
    out = []
    for row in rows:
        if any(type(row.get(c)) is int for c in columns):
            row = {**row, **{c: float(row[c]) for c in columns if type(row.get(c)) is int}}
        out.append(row)
    return out


def feedback_records(payload: Any, max_rows: int, t: float) -> list[dict[str, Any]]:
    """The log records of a feedback body: ``{"request_id": ..., "label": ...}``, a list of
    such objects, or ``{"rows": [...]}``. Each needs a string ``request_id`` and a number
    or boolean ``label`` (booleans become 0/1); anything else is refused (400) with the row
    and the reason, and nothing of the request is kept.

    >>> feedback_records({"request_id": "a", "label": True}, 10, 5.0)
    [{'request_id': 'a', 'label': 1, '_event_time': 5.0}]
    >>> feedback_records([{"request_id": "a"}], 10, 5.0)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: feedback row 0: no label (a number or true/false)
    """
    rows = payload.get("rows") if isinstance(payload, dict) and "rows" in payload else payload
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        raise BadRequest(400, 'feedback is {"request_id": "...", "label": 1}, a list of them, '
                              'or {"rows": [...]}')
    check_rows(rows, max_rows)
    if not rows:
        raise BadRequest(400, "no feedback rows")
    out = []
    for i, row in enumerate(rows):
        where = f"feedback row {i}"
        if not isinstance(row, dict):
            raise BadRequest(400, f"{where}: not an object with request_id and label")
        if REQUEST_ID not in row:
            raise BadRequest(400, f"{where}: no request_id")
        rid = _check_id(row[REQUEST_ID], where)
        if LABEL not in row:
            raise BadRequest(400, f"{where}: no label (a number or true/false)")
        label = row[LABEL]
        if isinstance(label, bool):
            label = int(label)
        elif not isinstance(label, int | float) or (isinstance(label, float)
                                                    and not math.isfinite(label)):
            raise BadRequest(400, f"{where}: label must be a finite number or true/false, "
                                  f"got {label!r}"[:200])
        out.append({REQUEST_ID: rid, LABEL: label, EVENT_TIME: t})
    return out
