"""Events from a Redis stream, read through a consumer group.

The source reads with ``XREADGROUP COUNT n BLOCK block_ms``, so a batch is whatever has
arrived, up to the stage's batch size, and an idle stream costs one blocking call per
``block_ms``. Entries it reads stay pending in the group (Redis' pending entries list)
until ``commit(offset)`` acknowledges them with ``XACK``; the runtime commits only what a
completed checkpoint covers. On ``open()`` (the first start, or a restart after a failure)
the consumer first re-reads its own pending entries, from the checkpointed offset when the
stage ``seek``\\s to one, and then new entries: an event read but not yet covered by a
checkpoint is read again, never lost.

Offsets are the entry ids mapped to int64 (``ms * 2**20 + seq``, see
``fusionkit.sources._redis``), so they increase along the stream like any other offset.

The group defaults to the name of the stage reading the source, so two stages reading one
stream each see every event. Stages given the same ``group`` (with different ``consumer``
names) share the stream instead: Redis gives each new entry to one of them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusionkit._clock import monotonic, now
from fusionkit.batch import INGEST_TS
from fusionkit.sources import _redis
from fusionkit.sources.base import Backoff, Source
from fusionkit.sources.decode import (
    DECODES,
    MAX_BYTES,
    decode_batch,
    empty_batch,
    limits,
    shown,
)

__all__ = ["Redis"]

BACKLOG_EVERY = 1.0  # seconds between two looks at the group's backlog


class Redis(Source):
    """A Redis stream as a source, read through a consumer group.

    Parameters
    ----------
    url
        The server, ``redis://host:port/db`` (``rediss://`` for TLS).
    stream
        The stream's key.
    group
        The consumer group; created (with the stream, if missing) on first use, reading
        from ``start``. Default: the name of the stage reading the source, so every stage
        sees every entry (``"fusionkit"`` when read outside a stage). Stages given the same
        group split the stream between them.
    consumer
        This reader's name in the group (default ``"fusionkit"``). Its pending entries are
        re-read after a restart, so keep it stable; give each stage sharing a group its own.
    batch
        Most entries one ``XREADGROUP`` returns (default: the stage's batch size).
    block_ms
        How long a read waits for new entries when there are none.
    decode
        ``"json"``: the entry's ``field`` holds a JSON object, one event.
        ``"fields"``: the entry's fields are the event's columns (values that all parse as
        numbers become numbers).
    field
        The field holding the JSON payload (``decode="json"``).
    time_field
        The event's column holding its time (seconds since the epoch, or a date string);
        default: the time Redis stored the entry (the id's milliseconds).
    label
        The label column, if the events carry one.
    schema
        A ``fusionkit.Schema`` the stage validates events with (default: inferred from the
        first batch). Pass one when early events may be malformed.
    start
        Where a newly created group starts: ``"0"`` the whole stream, ``"$"`` only entries
        added from now on.
    retry_for
        Seconds the source keeps retrying, with backoff, while the server cannot be reached
        mid-run before the stage fails (``None``: forever). At ``open()`` an unreachable
        server is an error at once.
    max_bytes
        Entries larger than this (default 1 MiB: the payload, or all field names and values)
        go to the dead letters unread, with a preview (``None``: no cap).
    max_future
        How far an event time may lie ahead of the wall clock (default ``"1h"``; seconds or
        a duration such as ``"10min"``; ``None``: no bound). Events further ahead, and
        events whose time is not finite, go to the dead letters: one event stamped
        ``Infinity`` would otherwise push a window's watermark past every later event.

    Entries that cannot be decoded (bad JSON, not an object, no ``field``, not UTF-8,
    too large, an unreadable or out-of-bounds time, deleted before they were read, or any
    error reading them) are not returned; ``take_dead_letters()`` hands them to
    the stage, which files them with a reason. ``health()`` tells whether the source is
    retrying and how far the group is behind the stream.

    Examples
    --------
    >>> src = Redis("redis://127.0.0.1:6379/0", stream="clicks", time_field="ts")
    >>> src.describe()["stream"], src.rate
    ('clicks', None)
    """

    rate = None

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", stream: str = "events",
                 group: str | None = None, consumer: str | None = None,
                 batch: int | None = None, block_ms: int = 100, decode: str = "json",
                 field: str = "data", time_field: str | None = None, label: str | None = None,
                 schema: Any = None, start: str = "0", retry_for: float | None = 300.0,
                 max_bytes: int | None = MAX_BYTES, max_future: float | str | None = "1h"):
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"a Redis URL looks like 'redis://127.0.0.1:6379/0', got {url!r}")
        for what, value in (("stream", stream), ("field", field)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{what} must be a non-empty string, got {value!r}")
        if group is not None and (not isinstance(group, str) or not group):
            raise ValueError(f"group must be a non-empty string or None (the stage's name), "
                             f"got {group!r}")
        if decode not in DECODES:
            raise ValueError(f"decode must be one of {DECODES}, got {decode!r}")
        if batch is not None and (isinstance(batch, bool) or int(batch) < 1):
            raise ValueError(f"batch must be a positive number of entries or None, got {batch!r}")
        if isinstance(block_ms, bool) or int(block_ms) < 1:
            raise ValueError(f"block_ms must be a positive number of milliseconds, got {block_ms!r}")
        if start not in ("0", "$"):
            raise ValueError(f"start must be '0' (whole stream) or '$' (new entries), got {start!r}")
        if retry_for is not None and retry_for < 0:
            raise ValueError(f"retry_for must be a number of seconds or None, got {retry_for!r}")
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer or "fusionkit"
        self.batch = None if batch is None else int(batch)
        self.block_ms = int(block_ms)
        self.decode = decode
        self.field = field
        self.time_field = time_field
        self.label = label
        self.schema = schema
        self.start = start
        self.retry_for = retry_for
        self.max_bytes, self.max_future = limits(max_bytes, max_future)
        self._reset()

    @property
    def consumer_group(self) -> str:
        """The group read through: ``group``, else the reading stage's name."""
        return self.group or self.stage or "fusionkit"

    def _reset(self) -> None:
        self._client: Any = None
        self._pending_from: str | None = "0"  # read own pending entries after this id
        self._last_id: str | None = None  # the last id handed out
        self._dead: list[tuple[Any, str, int]] = []
        self._backoff = Backoff(give_up=self.retry_for)
        self._backlog: float = float("nan")
        self._backlog_at = float("-inf")

    # picklable: the connection stays behind
    def __getstate__(self) -> dict[str, Any]:
        keep = ("url", "stream", "group", "consumer", "batch", "block_ms", "decode", "field",
                "time_field", "label", "schema", "start", "retry_for", "max_bytes",
                "max_future", "stage")
        return {k: self.__dict__[k] for k in keep if k in self.__dict__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"max_bytes": MAX_BYTES, "max_future": 3600.0, **state})
        self._reset()

    # -- the source protocol -------------------------------------------------------------
    def open(self) -> None:
        """Connect and make sure the group exists; reading starts with this consumer's
        pending entries. An unreachable server raises ``ConnectionError`` naming the URL."""
        self._reset()
        try:
            self._client = self._connect()
            self._ensure_group()
        except _redis.connection_errors() as exc:
            self._client = None
            raise ConnectionError(f"cannot reach Redis at {_redis.safe_url(self.url)}: "
                                  f"{exc}") from None

    def seek(self, offset: int) -> None:
        """Resume at ``offset``: re-read this consumer's pending entries from there on."""
        self._pending_from = "0" if offset <= 0 else _redis.offset_to_id(offset - 1)
        self._last_id = None if offset <= 0 else self._pending_from

    def read(self, n: int) -> pd.DataFrame:
        """Up to ``n`` events: pending ones first, then new ones (waiting ``block_ms``).

        While the server cannot be reached, returns an empty batch after a backoff delay
        and tries again on the next call; raises once that has lasted ``retry_for``.
        """
        if self._client is None:
            raise RuntimeError("Redis source: call open() before read()")
        count = min(int(n), self.batch or int(n))
        try:
            entries = self._read_entries(count)
        except _redis.connection_errors() as exc:
            self._lost(exc)
            return empty_batch()
        if self._backoff.retrying:
            self._backoff.ok()
        self._look_at_backlog()
        if not entries:
            return empty_batch()
        self._last_id = entries[-1][0].decode()
        return self._decode(entries)

    def commit(self, offset: int) -> int:
        """Acknowledge (``XACK``) this consumer's pending entries below ``offset``: a
        completed checkpoint covers them. Returns how many were acknowledged."""
        if offset <= 0:
            return 0
        own = self._client is None  # called outside a run: a connection of its own
        client = self._connect() if own else self._client
        last = _redis.offset_to_id(offset - 1)
        done, low = 0, "-"
        try:
            while True:
                rows = client.xpending_range(self.stream, self.consumer_group, low, last, 1000,
                                             self.consumer)
                if rows:
                    ids = [r["message_id"] for r in rows]
                    done += client.xack(self.stream, self.consumer_group, *ids)
                if len(rows) < 1000:
                    return done
                low = "(" + ids[-1].decode()
        finally:
            if own:
                client.close()

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "redis", "url": _redis.safe_url(self.url), "stream": self.stream,
                "group": self.group or self.stage, "consumer": self.consumer,
                "decode": self.decode, "rate": None}

    # -- what the stage collects after each read ------------------------------------------
    def take_dead_letters(self) -> list[tuple[Any, str, int]]:
        """Entries that could not be decoded since the last call: (payload, reason, offset)."""
        dead, self._dead = self._dead, []
        return dead

    def health(self) -> dict[str, float]:
        """Gauges for the monitor: retrying (0/1), failed calls so far, entries of the
        stream not yet delivered to the group (NaN when Redis cannot tell)."""
        return {"retrying": int(self._backoff.retrying), "source_errors": self._backoff.total,
                "source_backlog": self._backlog}

    @property
    def last_error(self) -> str:
        """Why the server could not be reached the last time it could not, with its URL."""
        return f"Redis at {_redis.safe_url(self.url)}: {self._backoff.last_error or 'no error'}"

    # -- inside ----------------------------------------------------------------------------
    def _connect(self) -> Any:
        return _redis.connect(self.url, socket_timeout=self.block_ms / 1000 + 10.0)

    def _ensure_group(self) -> None:
        redis = _redis.redis_module()
        try:
            self._client.xgroup_create(self.stream, self.consumer_group, id=self.start,
                                       mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read_entries(self, count: int) -> list[tuple[bytes, dict]]:
        c = self._client
        if self._pending_from is not None:
            reply = c.xreadgroup(self.consumer_group, self.consumer,
                                 {self.stream: self._pending_from}, count=count)
            entries = reply[0][1] if reply else []
            if entries:
                self._pending_from = entries[-1][0].decode()
                return entries
            self._pending_from = None  # caught up with the pending entries: now new ones
        reply = c.xreadgroup(self.consumer_group, self.consumer, {self.stream: ">"},
                             count=count, block=self.block_ms)
        return reply[0][1] if reply else []

    def _lost(self, exc: BaseException) -> None:
        """The server went away: back off, and re-read pending entries once it is back (a
        read whose reply was lost has left its entries pending for this consumer)."""
        self._backoff.failed(exc)
        if self._backoff.expired():
            raise ConnectionError(f"Redis at {_redis.safe_url(self.url)} unreachable for "
                                  f"{self.retry_for:g}s: {self._backoff.last_error}") from None
        self._pending_from = self._last_id or "0"
        self._backoff.wait()
        try:
            self._ensure_group()  # a server restarted without persistence lost the group
        except _redis.connection_errors():
            pass

    def _look_at_backlog(self) -> None:
        t = monotonic()
        if t - self._backlog_at < BACKLOG_EVERY:
            return
        self._backlog_at = t
        try:
            for g in self._client.xinfo_groups(self.stream):
                name = g.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == self.consumer_group:
                    lag = g.get("lag")
                    self._backlog = float(lag) if lag is not None else float("nan")
        except Exception:
            self._backlog = float("nan")

    def _decode(self, entries: list[tuple[bytes, dict]]) -> pd.DataFrame:
        records, offsets, times = [], [], []
        key = self.field.encode()
        for entry_id, fields in entries:
            try:
                off = _redis.id_to_offset(entry_id)
            except ValueError as exc:
                self._dead.append((shown(fields), str(exc), -1))
                continue
            if self.decode == "json" and fields and key not in fields:
                self._dead.append((shown(fields), f"entry has no {self.field!r} field", off))
                continue
            offsets.append(off)
            times.append((off >> _redis.SEQ_BITS) / 1000.0)
            if not fields:  # a pending entry deleted from the stream since it was read
                records.append(None)
            else:
                records.append(fields if self.decode == "fields" else fields[key])
        decoded = decode_batch(records, offsets, times, self.decode, self.time_field,
                               max_bytes=self.max_bytes, max_future=self.max_future)
        self._dead.extend(decoded.dead)
        batch = decoded.batch
        batch[INGEST_TS] = now()
        return batch
