"""Turning broker records into a batch: JSON objects or field maps, event times, dead letters.

A broker source hands over one record per event: the raw payload (bytes holding a JSON
object) or a field map (Redis Streams' ``{field: value}``), with the event's offset and the
time the broker stored it. ``decode_batch`` builds the DataFrame batch from the records it
can read and returns the others as dead letters ``(payload, reason, offset)``, so a
malformed event never stops a stage: the stream worker files them with the stage's dead
letters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fusionkit.batch import EVENT_TIME, OFFSET, RESERVED

DECODES = ("json", "fields")


class Decoded(NamedTuple):
    """A decoded read: the batch of good events and the dead letters."""

    batch: pd.DataFrame
    dead: list[tuple[Any, str, int]]


def empty_batch() -> pd.DataFrame:
    """A batch with no events (what a source returns when nothing is available now)."""
    return pd.DataFrame({EVENT_TIME: np.empty(0, "float64"), OFFSET: np.empty(0, "int64")})


def _text(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else str(raw)


def shown(raw: Any) -> Any:
    """A payload as kept in the dead letters: text where it is text, else the bytes."""
    if isinstance(raw, bytes | bytearray):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return bytes(raw)
    if isinstance(raw, dict):
        return {shown(k): shown(v) for k, v in raw.items()}
    return raw


def _json_row(raw: Any) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw)
    except UnicodeDecodeError:
        return None, "payload is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at position {exc.pos}"
    except TypeError:
        return None, f"payload is {type(raw).__name__}, not JSON text"
    if not isinstance(value, dict):
        return None, f"JSON payload is {type(value).__name__}, not an object"
    return value, None


def _fields_row(raw: Any) -> tuple[dict | None, str | None]:
    if not isinstance(raw, dict) or not raw:
        return None, "entry has no fields"
    try:
        return {_text(k): _text(v) for k, v in raw.items()}, None
    except UnicodeDecodeError:
        return None, "a field name or value is not UTF-8 text"


def numbers_where_possible(col: pd.Series) -> pd.Series:
    """A text column as numbers if every value parses as one; else numbers where they
    parse and the text elsewhere, so a schema can name the odd values.

    >>> numbers_where_possible(pd.Series(["1", "2.5"])).tolist()
    [1.0, 2.5]
    >>> numbers_where_possible(pd.Series(["1", "x"])).tolist()
    [1.0, 'x']
    >>> numbers_where_possible(pd.Series(["a", "b"])).tolist()
    ['a', 'b']
    """
    num = pd.to_numeric(col, errors="coerce")
    text = col.notna() & num.isna()
    if not text.any():
        return num
    if text.all() or not (col.notna() & ~text).any():
        return col
    mixed = num.astype(object)
    mixed[text] = col[text]
    return mixed


def event_seconds(col: pd.Series) -> np.ndarray:
    """Event times as float seconds: numbers are taken as seconds since the epoch, datetimes
    and date strings are converted; what cannot be read is NaN.

    >>> event_seconds(pd.Series([1.5, "2024-01-01T00:00:00Z", "soon"])).tolist()
    [1.5, 1704067200.0, nan]
    """
    if pd.api.types.is_datetime64_any_dtype(col):
        return _epoch_seconds(pd.to_datetime(col, utc=True))
    num = np.array(pd.to_numeric(col, errors="coerce"), dtype="float64")
    todo = np.isnan(num) & col.notna().to_numpy()
    if todo.any():
        when = pd.to_datetime(col[todo].astype(str), errors="coerce", utc=True, format="ISO8601")
        num[todo] = _epoch_seconds(when)
    return num


def _epoch_seconds(when: pd.Series) -> np.ndarray:
    """UTC datetimes (any resolution) as float seconds since the epoch; NaT is NaN."""
    delta = when - pd.Timestamp(0, tz="UTC")
    return delta.dt.total_seconds().to_numpy(dtype="float64", na_value=np.nan)


def decode_batch(records: Sequence[Any], offsets: Sequence[int], broker_times: Sequence[float],
                 decode: str = "json", time_field: str | None = None) -> Decoded:
    """Build the batch from broker records.

    ``records[i]`` is a JSON payload (``decode="json"``) or a field map
    (``decode="fields"``, values that all parse as numbers become numbers); ``None`` means
    the record is gone (deleted before it was read). ``_event_time`` is ``time_field``
    from the event if given, else the broker's time; ``_offset`` is ``offsets[i]``.
    Reserved columns in the payload are replaced.

    >>> d = decode_batch([b'{"x": 1}', b'{oops', b'[1]'], [10, 11, 12], [5.0, 5.0, 5.0])
    >>> d.batch[["x", "_event_time", "_offset"]].values.tolist()
    [[1.0, 5.0, 10.0]]
    >>> [(reason, off) for _, reason, off in d.dead]
    [('invalid JSON: Expecting property name enclosed in double quotes at position 1', 11), ('JSON payload is list, not an object', 12)]
    """
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
    parse = _json_row if decode == "json" else _fields_row
    rows: list[dict] = []
    keep: list[int] = []
    dead: list[tuple[Any, str, int]] = []
    for i, raw in enumerate(records):
        if raw is None:
            dead.append((None, "entry was deleted before it was read", int(offsets[i])))
            continue
        row, why = parse(raw)
        if row is None:
            dead.append((shown(raw), why, int(offsets[i])))
            continue
        rows.append(row)
        keep.append(i)
    if not rows:
        return Decoded(empty_batch(), dead)
    batch = pd.DataFrame.from_records(rows)
    batch = batch.drop(columns=[c for c in RESERVED if c in batch.columns])
    if decode == "fields":
        for c in batch.columns:
            batch[c] = numbers_where_possible(batch[c])
    idx = np.asarray(keep)
    batch[OFFSET] = np.asarray(offsets, dtype="int64")[idx]
    if time_field is None:
        batch[EVENT_TIME] = np.asarray(broker_times, dtype="float64")[idx]
        return Decoded(batch, dead)
    if time_field in batch.columns:
        secs = event_seconds(batch[time_field])
    else:
        secs = np.full(len(batch), np.nan)
    bad = np.isnan(secs)
    batch[EVENT_TIME] = secs
    if bad.any():
        for pos in np.flatnonzero(bad):
            value = rows[pos].get(time_field)
            why = (f"missing event time field {time_field!r}" if value is None
                   else f"invalid event time in {time_field!r}: {value!r}")
            dead.append((rows[pos], why, int(batch[OFFSET].iat[pos])))
        batch = batch[~bad].reset_index(drop=True)
    return Decoded(batch, dead)
