"""Turning broker records into a batch: JSON objects or field maps, event times, dead letters.

A broker source hands over one record per event: the raw payload (bytes holding a JSON
object) or a field map (Redis Streams' ``{field: value}``), with the event's offset and the
time the broker stored it. ``decode_batch`` builds the DataFrame batch from the records it
can read and returns the others as dead letters ``(payload, reason, offset)``, so a
malformed event never stops a stage: the stream worker files them with the stage's dead
letters.

No record can stop the decoder. Any exception while reading one record (``json.loads``
raises ``RecursionError`` on ~200 KB of nested ``[``, ``ValueError`` on an integer of
more than 4300 digits) dead-letters that record with the exception as its reason; a step
that works on the whole batch (building the DataFrame, reading event times: pandas raises
on a date past the year 2262) is retried on halves of the batch until the record that
breaks it stands alone and is dead-lettered. Payloads over ``max_bytes`` are dead-lettered
unread, with a preview of their first bytes. Event times must be finite and at most
``max_future`` seconds ahead of the wall clock: one event stamped ``Infinity``, or in
milliseconds where seconds were meant, would otherwise move a window's watermark so far
that every later event is late.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit._duration import parse_duration
from fusionkit.batch import EVENT_TIME, OFFSET, RESERVED

DECODES = ("json", "fields")
MAX_BYTES = 1 << 20  # default cap of one payload: 1 MiB
MAX_FUTURE = 3600.0  # default bound of event times ahead of the wall clock: one hour
PREVIEW = 1024  # bytes of an oversized payload kept in its dead letter
_REASON = 300  # characters of an exception's message kept in a reason


def limits(max_bytes: int | None, max_future: float | str | None
           ) -> tuple[int | None, float | None]:
    """A broker source's ``max_bytes`` and ``max_future`` checked, the latter in seconds
    (a number, or a duration such as ``"1h"``); ``None`` turns either off.

    >>> limits(1024, "30min")
    (1024, 1800.0)
    """
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive number of bytes or None, "
                             f"got {max_bytes!r}")
    if max_future is not None:
        seconds = parse_duration(max_future)
        if not seconds >= 0:
            raise ValueError(f"max_future must be a duration of at least 0 s or None, "
                             f"got {max_future!r}")
        max_future = seconds
    return max_bytes, max_future


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


def payload_size(raw: Any) -> int:
    """Bytes of a payload: its length, or for a field map the lengths of names and values.

    >>> payload_size(b"abc"), payload_size({b"k": b"vv"})
    (3, 3)
    """
    if isinstance(raw, bytes | bytearray | str):
        return len(raw)
    if isinstance(raw, dict):
        return sum(payload_size(k) + payload_size(v) for k, v in raw.items())
    return len(str(raw))


def _preview(raw: Any) -> str:
    """The first ``PREVIEW`` bytes of an oversized payload, as text."""
    if isinstance(raw, bytes | bytearray):
        return bytes(raw[:PREVIEW]).decode("utf-8", "replace") + "..."
    text = raw if isinstance(raw, str) else repr(shown(raw))
    return text[:PREVIEW] + "..."


def _failed(what: str, exc: BaseException) -> str:
    """A reason naming the exception a record raised."""
    message = str(exc)
    if len(message) > _REASON:
        message = message[:_REASON] + "..."
    return f"{what}: {type(exc).__name__}: {message}" if message else \
        f"{what}: {type(exc).__name__}"


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
                 decode: str = "json", time_field: str | None = None, *,
                 max_bytes: int | None = MAX_BYTES, max_future: float | None = MAX_FUTURE,
                 at: float | None = None) -> Decoded:
    """Build the batch from broker records.

    ``records[i]`` is a JSON payload (``decode="json"``) or a field map
    (``decode="fields"``, values that all parse as numbers become numbers); ``None`` means
    the record is gone (deleted before it was read). ``_event_time`` is ``time_field``
    from the event if given, else the broker's time; ``_offset`` is ``offsets[i]``.
    Reserved columns in the payload are replaced.

    Dead letters, each with its reason: records that cannot be read (whatever the exception),
    payloads over ``max_bytes`` (not read; ``None``: no cap), and events whose time is
    missing, not finite, or more than ``max_future`` seconds after ``at`` (the wall clock;
    ``None``: no bound).

    >>> d = decode_batch([b'{"x": 1}', b'{oops', b'[1]'], [10, 11, 12], [5.0, 5.0, 5.0])
    >>> d.batch[["x", "_event_time", "_offset"]].values.tolist()
    [[1.0, 5.0, 10.0]]
    >>> [(reason, off) for _, reason, off in d.dead]
    [('invalid JSON: Expecting property name enclosed in double quotes at position 1', 11), ('JSON payload is list, not an object', 12)]
    >>> d = decode_batch([b'{"t": Infinity}', b'{"t": 1e12}', b'{"t": 99.5}'], [1, 2, 3],
    ...                  [0.0] * 3, time_field="t", at=100.0)
    >>> d.batch["_event_time"].tolist(), [reason for _, reason, _ in d.dead]
    ([99.5], ["event time in 't' is not finite: inf", "event time in 't' is 999999999900 s ahead of the clock (max_future=3600 s)"])
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
        size = payload_size(raw)
        if max_bytes is not None and size > max_bytes:
            dead.append((_preview(raw), f"payload of {size} bytes is over the limit of "
                                        f"{max_bytes} (max_bytes); not read", int(offsets[i])))
            continue
        try:
            row, why = parse(raw)
        except Exception as exc:  # whatever one record raises, it alone goes
            row, why = None, _failed("cannot decode the payload", exc)
        if row is None:
            dead.append((shown(raw), why, int(offsets[i])))
            continue
        rows.append(row)
        keep.append(i)
    if not rows:
        return Decoded(empty_batch(), dead)
    offs = np.asarray(offsets, dtype="int64")[keep]
    times = None if time_field is not None else np.asarray(broker_times, "float64")[keep]
    parts, pos = _build_apart(rows, np.arange(len(rows)), offs, times, decode, time_field, dead)
    if not parts:
        return Decoded(empty_batch(), dead)
    batch = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    secs = batch[EVENT_TIME].to_numpy(dtype="float64")
    limit = (now() if at is None else at) + (np.inf if max_future is None else max_future)
    bad = ~np.isfinite(secs) | (secs > limit)
    if bad.any():
        for p in np.flatnonzero(bad):
            row = rows[pos[p]]
            dead.append((row, _time_reason(row, secs[p], limit, time_field, max_future),
                         int(offs[pos[p]])))
        batch = batch[~bad].reset_index(drop=True)
    return Decoded(batch, dead)


def _build(rows: list[dict], offsets: np.ndarray, times: np.ndarray | None, decode: str,
           time_field: str | None) -> pd.DataFrame:
    """The DataFrame of decoded rows, with ``_offset`` and ``_event_time`` (NaN where the
    time is missing or unreadable)."""
    batch = pd.DataFrame.from_records(rows)
    batch = batch.drop(columns=[c for c in RESERVED if c in batch.columns])
    if decode == "fields":
        for c in batch.columns:
            batch[c] = numbers_where_possible(batch[c])
    batch[OFFSET] = offsets
    if time_field is None:
        batch[EVENT_TIME] = times
    elif time_field in batch.columns:
        batch[EVENT_TIME] = event_seconds(batch[time_field])
    else:
        batch[EVENT_TIME] = np.full(len(batch), np.nan)
    return batch


def _build_apart(rows: list[dict], idx: np.ndarray, offsets: np.ndarray,
                 times: np.ndarray | None, decode: str, time_field: str | None,
                 dead: list[tuple[Any, str, int]]) -> tuple[list[pd.DataFrame], np.ndarray]:
    """``_build`` of the rows ``idx``; if that raises, of each half in turn, down to the
    single rows that raise alone, which go to ``dead``. Returns the frames built and, for
    each of their rows in order, its index in ``rows``: a batch with k such rows costs about
    k * log2(len(rows)) builds instead of one."""
    try:
        part = [rows[i] for i in idx]
        return [_build(part, offsets[idx], None if times is None else times[idx], decode,
                       time_field)], idx
    except Exception as exc:  # find the record(s) that break the batch
        if len(idx) == 1:
            dead.append((rows[idx[0]], _failed("cannot make an event of the payload", exc),
                         int(offsets[idx[0]])))
            return [], idx[:0]
    mid = len(idx) // 2
    a, ia = _build_apart(rows, idx[:mid], offsets, times, decode, time_field, dead)
    b, ib = _build_apart(rows, idx[mid:], offsets, times, decode, time_field, dead)
    return a + b, np.concatenate([ia, ib])


def _time_reason(row: dict, secs: float, limit: float, time_field: str | None,
                 max_future: float | None) -> str:
    where = "the broker's time" if time_field is None else f"event time in {time_field!r}"
    if np.isnan(secs):
        if time_field is None:
            return "the broker gave no time"
        value = row.get(time_field)
        if value is None:
            return f"missing event time field {time_field!r}"
        return f"invalid event time in {time_field!r}: {_short(value)}"
    if not np.isfinite(secs):
        return f"{where} is not finite: {secs}"
    ahead = secs - (limit - max_future)
    return f"{where} is {ahead:.0f} s ahead of the clock (max_future={max_future:g} s)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."
