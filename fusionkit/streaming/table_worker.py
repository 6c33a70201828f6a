"""The actor of a table stage: a :class:`~fusionkit.streaming.tables.TableState` kept by
Ray, updated with every batch of one stream stage and read by key (``fk.lookup``).

- **Input**: it takes the pushes of every actor of its stream, as a train stage does (the
  stream sends each batch to it; barriers align over all the stream's actors).
- **Lookups**: ``lookup(keys)`` answers every key asked in one call, between two batches
  (a lock keeps a batch's update whole), with the values of the window still open at each
  key's newest event. A lookup that reaches an actor Ray restarted waits for the rollback
  to put the table back, rather than answering from an empty table.
- **Checkpoints**: the snapshot holds the table's state (keys, partial rows, stream time,
  counters) and the events it took; ``restore`` puts them back in a new epoch with the
  stream, which replays what came after, so every event is in the table once. Lookups and
  misses are not events: a rollback keeps the counts this process has (the larger of its
  own and the checkpoint's).
- **Counts**: ``events_in`` in ``fk.status()`` is the events the table holds (in its
  state, so exact through a recovery), not the pushes this process happened to take.
- **Parallelism**: with ``parallelism=N`` each of the N actors is sent every batch of the
  stream (put once in the object store, shared) and keeps the keys of its part
  (``tables.part_of``, a stable hash) with the whole stream's time, so together they hold
  exactly what one actor would; its ``events_in`` counts its part's events.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import monotonic, now
from fusionkit.batch import INGEST_TS
from fusionkit.errors import FusionError
from fusionkit.runtime.channel import Inbox
from fusionkit.runtime.checkpoint import EndOfStream
from fusionkit.runtime.reports import TableReport
from fusionkit.runtime.specs import TableSpec
from fusionkit.runtime.stage import StageActor
from fusionkit.streaming.tables import TableState

RESTORE_WAIT = 60.0  # how long a lookup waits for a restarted actor's rollback
LOOKUP_SAMPLE = 1000  # the last lookups whose time the report's p99 is of
AGE_SAMPLE = 1000  # the last batches whose age when taken the report's staleness is of


def make_table(spec: TableSpec, index: int = 0) -> TableState:
    """A fresh table of the spec's parameters: actor ``index``'s part of the keys."""
    return TableState(spec.window, key=spec.key, ttl=spec.ttl, defaults=spec.defaults,
                      share=(index, spec.parallelism))


class TableWorker(StageActor):
    kind = "table"

    def __init__(self, spec: TableSpec, index: int, monitor: Any, state: dict | None = None):
        super().__init__(spec.name, index, monitor)
        self.spec = spec
        self.table = make_table(spec, index)
        self.inbox = Inbox()
        self.epoch = 0
        self.upstream = 1
        self.events_in = 0
        self._controller = None
        self._lock = threading.Lock()  # one batch's update, or one lookup, at a time
        self._taken = threading.Condition(self._lock)  # notified when a batch is taken
        self._lookup_s: deque[float] = deque(maxlen=LOOKUP_SAMPLE)  # recent lookups' times
        # per batch taken: how long ago its oldest event was read from the source (s)
        self._age_s: deque[float] = deque(maxlen=AGE_SAMPLE)
        if state:
            self.set_state(state)

    # -- control --------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        return {"ok": True}

    def start(self, targets: Any = None, epoch: int | None = None) -> str:
        """Take batches from now on (``targets``: none, a table sends nothing on)."""
        if epoch is not None and epoch > self.epoch:
            self.epoch = epoch
        if self.status in ("starting", "failed", "stopped"):
            self.status = "running"
        return self.status

    def set_upstream(self, n: int) -> None:
        """How many upstream actors send to this one (barriers align over all of them)."""
        self.upstream = max(1, int(n))

    def peek(self, n: int = 5) -> pd.DataFrame | None:
        return None

    def info(self) -> TableReport:
        report = self._report()
        report["totals"] = {**report["totals"], "events_in": self.events_in}
        t = self.table
        return TableReport(**report, keys_held=t.held_keys, held_rows=t.held_rows,
                           lookups=t.lookups, misses=t.misses, late=t.late_count,
                           invalid=t.invalid_count, evicted=t.evicted, clock=t.clock,
                           waiting=self.inbox.waiting, lookup_p99_ms=_p99_ms(self._lookup_s),
                           staleness_p99_ms=_p99_ms(self._age_s))

    def get_state(self) -> dict[str, Any]:
        with self._lock:
            return {"table": self.table.get_state(), "events": self.events_in,
                    "dead": self.dead.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.table = make_table(self.spec, self.index)
            if state.get("table") is not None:
                self.table.set_state(state["table"])
            self.events_in = int(state.get("events", 0))
        self.dead.set_state(state.get("dead"))

    # -- reading --------------------------------------------------------------------------
    def lookup(self, keys: list[Any], table: str | None = None) -> pd.DataFrame:
        """The values of ``keys`` now, one row per key asked (``TableState.lookup``).
        ``table``: the table the caller means (a serve replica holding this actor since
        before the table was defined again is told it is not that table any more)."""
        if table is not None and table != self.name:
            raise FusionError(f"this actor keeps table {self.name!r}, not {table!r}")
        deadline = time.monotonic() + RESTORE_WAIT
        while self.awaiting_rollback:  # restarted by Ray: empty until the rollback
            if time.monotonic() > deadline:
                raise FusionError(f"table {self.name!r} is being restored after its actor was "
                                  f"restarted; ask again in a moment")
            time.sleep(0.05)
        t0 = monotonic()
        with self._lock:
            out = self.table.lookup(keys)
        self._lookup_s.append(monotonic() - t0)
        return out

    def changes(self, token: str | None, version: int, table: str, wait: float = 1.0
                ) -> tuple[str | None, int, pd.DataFrame | None, list, bool]:
        """What a copy of this actor's values (a serve replica's) at (``token``,
        ``version``) needs to be brought up to date: ``(token, version, values, dropped,
        afresh)``, the values of the keys that changed (every key held when ``afresh``: the
        copy is of another state, or too far behind) and the keys no longer held. Waits up
        to ``wait`` seconds for a batch when nothing changed; ``values`` None: nothing did
        (or the actor waits for its rollback)."""
        if table != self.name:
            raise FusionError(f"this actor keeps table {self.name!r}, not {table!r}")
        deadline = monotonic() + wait
        with self._taken:
            while True:
                t = self.table
                changed = None if token != t.token else t.changes_since(version)
                if not self.awaiting_rollback and changed != ([], []):
                    break
                left = deadline - monotonic()
                if left <= 0:
                    return token, version, None, [], False
                self._taken.wait(left)
            if changed is None:
                return t.token, t.version, t.values(t.keys()), [], True
            held, dropped = changed
            return t.token, t.version, t.values(held), dropped, False

    # -- data -----------------------------------------------------------------------------
    def push(self, sender: str, seq: int, batch: Any, epoch: int = 0) -> None:
        if not self._arrives(sender, seq, batch, epoch):
            return
        inbox = self.inbox
        with inbox.admit(sender, seq):
            if isinstance(batch, EndOfStream):  # nothing to take: its turn passes
                return
            if epoch < self.epoch or inbox is not self.inbox:
                return
            if self.status in ("failed", "stopped"):
                return
            try:
                self._take(batch)
            except Exception as exc:
                self._fail(exc, "in the table")

    def _take(self, batch: pd.DataFrame) -> None:
        t0 = monotonic()
        with self._lock:
            late, invalid, taken = (self.table.late_count, self.table.invalid_count,
                                    self.table.taken)
            self.table.update(batch)
            taken = self.table.taken - taken  # its part's events (all, on one actor)
            self.events_in += taken
            late = self.table.late_count - late
            invalid = self.table.invalid_count - invalid
            held = (self.table.held_keys, self.table.held_rows)
            self._taken.notify_all()
        if INGEST_TS in batch.columns and len(batch):  # its values hold the batch from now
            self._age_s.append(max(0.0, now() - float(batch[INGEST_TS].min())))
        self.reporter.count(events_in=taken, late=late, invalid=invalid)
        self.reporter.gauge(keys_held=held[0], held_rows=held[1])
        self.reporter.latency(monotonic() - t0)
        self.reporter.flush()

    # -- checkpoints and recovery ---------------------------------------------------------
    def restore(self, state: dict[str, Any] | None, epoch: int) -> str:
        """Go back to a checkpoint's state (or an empty table) in epoch ``epoch``; the
        stream replays what came after it."""
        with self.inbox.exclusive():
            asked = (self.table.lookups, self.table.misses)
            self.epoch = epoch
            self.inbox = Inbox()
            self.set_state(state or {})
            with self._lock:
                self.table.lookups = max(self.table.lookups, asked[0])
                self.table.misses = max(self.table.misses, asked[1])
                self.awaiting_rollback = False
            if self.status in ("starting", "failed", "finished", "stopped"):
                self.status = "running"
        return self.status


def _p99_ms(seconds: deque[float]) -> float:
    """The 99th percentile of recent times (seconds) in ms; NaN: none yet."""
    times = list(seconds)
    return float(np.percentile(times, 99)) * 1e3 if times else float("nan")
