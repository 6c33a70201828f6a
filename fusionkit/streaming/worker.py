"""The actors of a stream stage.

With parallelism 1 one actor does everything ("fused"): it reads the source, validates,
runs the operator chain and hands the result downstream. With parallelism N a "source"
actor reads, validates and partitions by key, and N "ops" actors run the chain; or, for a
source whose partitions split over actors (Kafka's) and no key, N fused actors each read
their own share of the partitions.
"""

from __future__ import annotations

import copy
import threading
import traceback
from collections.abc import Sequence
from typing import Any

import pandas as pd
import ray

from fusionkit._clock import monotonic
from fusionkit.batch import INGEST_TS, OFFSET
from fusionkit.runtime.channel import CheckpointRequests, Inbox, Outbox
from fusionkit.runtime.checkpoint import Barrier, EndOfStream
from fusionkit.runtime.pacer import Pacer
from fusionkit.runtime.records import Event
from fusionkit.runtime.reports import StreamReport
from fusionkit.runtime.specs import StreamSpec, slot
from fusionkit.runtime.stage import StageActor
from fusionkit.sources.base import later
from fusionkit.streaming.chain import Chain
from fusionkit.streaming.keyed import KeyedState
from fusionkit.streaming.operators import Filter, KeyBy, Map, partition
from fusionkit.streaming.validate import Schema
from fusionkit.streaming.windows import SlidingWindow

PEEK_ROWS = 1000
OPS = "__ops__"  # the outbox target name of a stage's own ops actors
SETTLE_TIMEOUT = 30.0  # the longest settle() holds the reading loop
# operators whose only effect is their output (the user functions inside them are what a
# probe checks)
_PURE = (Map, Filter, KeyBy, KeyedState, SlidingWindow)


def probe_operators(operators: list[Any]) -> tuple[list[Any], bool]:
    """The operators a definition-time probe may run, and whether that is the whole chain.

    The probe's sample is read again by the running stage, so an operator that acts outside
    the pipeline must not see it: that would write the sample's events (or the windows they
    fire) twice. Sinks (``sink = True``) are left out (they pass batches on unchanged); the
    probe stops at the first operator that is neither one of fusionkit's own transforms nor
    a sink, since a user-defined operator may write somewhere too.
    """
    ops = []
    for op in operators:
        if getattr(op, "sink", False):
            continue
        if not isinstance(op, _PURE):
            return ops, False
        ops.append(op)
    return ops, True


class StreamWorker(StageActor):
    kind = "stream"

    def __init__(self, spec: StreamSpec, role: str, index: int, monitor: Any,
                 state: dict | None = None):
        super().__init__(spec.name, index, monitor)
        self.spec = spec
        self.role = role
        self.source = spec.source_of(index) if role == "fused" else spec.source
        self.source.bind(spec.name)  # a broker source's default consumer group
        self.chain = Chain(copy.deepcopy(list(spec.operators)))
        self.epoch = 0
        self._defined_paused = spec.paused
        self._waiting = spec.waiting is not None  # no consumer: the reading loop waits
        # checkpoints requested, taken in increasing order (barriers leave in that order;
        # a request that arrives after a later one was taken is dropped, see channel.py)
        self._checkpoint_due = CheckpointRequests()
        self._ckpt_lock = threading.Lock()  # hands a checkpoint request to the reading loop
        self._reading = False  # the reading loop takes requests (else they are served now)
        self._commit_due: int | None = None  # an offset a completed checkpoint covers
        self._controller = None
        self.schema: Schema | None = spec.schema
        self.outbox = Outbox(f"{spec.name}/{role}{index}", spec.max_inflight)
        self.inbox = Inbox()
        self.offset = 0
        self.last_output: pd.DataFrame | None = None
        self.late: list[pd.DataFrame] = []
        self.pacer: Pacer | None = None
        self._rr = 0
        self._thread: threading.Thread | None = None
        # settle(): the reading loop stops between two batches (``_settle``) and says so
        # (``_parked``) until unsettle(), for a consumer that must start from a clean cut
        self._settle = threading.Event()
        self._parked = threading.Event()
        if state:
            self.set_state(state)

    # -- control --------------------------------------------------------------------------
    def probe(self, rows: int = 200) -> dict[str, Any]:
        """Run a sample through copies of the source and the chain, before starting.

        Catches a broken user function at definition time, in the user's cell.
        """
        try:
            if self.role == "ops":
                return {"ok": True}
            src = copy.deepcopy(self.source)
            src.open()
            try:
                sample = src.read(rows)
                deadline = monotonic() + getattr(src, "probe_wait", 5.0)
                while sample is not None and len(sample) == 0 and monotonic() < deadline:
                    sample = src.read(rows)
            finally:
                src.close()
            if sample is None or len(sample) == 0:
                return {"ok": True, "sample": None}
            sample = sample.copy()
            sample[INGEST_TS] = sample.get(INGEST_TS, 0.0)
            if self.schema is None:
                self.schema = getattr(self.source, "schema", None) or Schema.infer(sample)
            good, _, _ = self.schema.split(sample)
            ops, whole = probe_operators(self.chain.operators)
            out = Chain(copy.deepcopy(ops)).process(good)
            # the output of part of the chain is not the stage's: a train stage defined on
            # this one then takes a sample of what the stage really emits
            return {"ok": True, "sample": out.head(rows) if whole else None}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": "".join(traceback.format_exception(exc))}

    def start(self, targets: dict[str, list[Any]], epoch: int | None = None) -> str:
        """Send to ``targets`` and start reading (a reader). ``epoch``: the pipeline's, for an
        actor joining a pipeline that has recovered before (its train stage drops batches of
        an earlier epoch, as sent before the recovery)."""
        if epoch is not None and epoch > self.epoch:
            self.epoch = self.outbox.epoch = epoch
        self.outbox.set_targets(targets)
        self.status = "running"
        if ((self._defined_paused or self._waiting) and self._thread is None
                and self.role != "ops"):
            self._resume.clear()  # wait for resume() (or a consumer) to read the source
            self.status = "paused" if self._defined_paused else "waiting"
        self._defined_paused = False
        if self.role in ("fused", "source") and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"fk-{self.name}", daemon=True)
            self._thread.start()
        return self.status

    def set_targets(self, targets: dict[str, list[Any]]) -> None:
        self.outbox.set_targets(targets)

    def hold(self) -> str:
        """Nothing takes this stage's events any more: stop reading until a consumer comes
        (``resume``). The source stays where it is, so nothing is read for nobody."""
        self._waiting = True
        if self.status == "running" and self.role != "ops":
            self._resume.clear()
            self.status = "waiting"
        return self.status

    def resume(self) -> str:
        """Read again (``fk.resume``): a paused or waiting stage, with or without consumers."""
        self._waiting = False
        return super().resume()

    def wake(self) -> str:
        """A consumer came: a waiting stage reads (a paused one stays paused)."""
        self._waiting = False
        if self.status == "waiting":
            self.status = "running"
            self._resume.set()
        return self.status

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Stop handing batches on, and return once every batch handed on has been taken:
        the reading loop (a reader's) parks between two batches, and what this actor sent
        has been processed by its receivers. An operator actor waits for the batch it is
        processing, then for its sends (call it after its source actor settled: nothing
        comes in then). A consumer defined now thus starts from a clean cut: what the
        stage's other consumers took before it is what they hold. Until ``unsettle()``, or
        ``timeout`` seconds (a controller gone meanwhile does not stall the stage). False:
        not settled within ``timeout`` (a consumer paused by the user takes nothing)."""
        deadline = monotonic() + timeout
        parked = True
        if self.role != "ops":
            self._settle.set()
            thread = self._thread
            if thread is not None and thread.is_alive():
                parked = self._parked.wait(timeout)
        else:
            with self.inbox.exclusive():
                pass
        return self.outbox.drain(timeout=max(0.0, deadline - monotonic())) and parked

    def unsettle(self) -> None:
        """Go on handing batches on (after ``settle``)."""
        self._settle.clear()

    def _park(self) -> None:
        """Wait here, between two batches, while ``settle()`` holds the loop."""
        self._parked.set()
        deadline = monotonic() + SETTLE_TIMEOUT
        while self._settle.is_set() and monotonic() < deadline:
            if self._stop.wait(0.01):
                break
        self._settle.clear()
        self._parked.clear()

    def stop(self) -> str:
        status = super().stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return status

    def peek(self, n: int = 5) -> pd.DataFrame | None:
        return None if self.last_output is None else self.last_output.tail(n)

    def get_state(self) -> dict[str, Any]:
        """Source position, operator state and dead letters (a checkpoint covers their
        offsets: the broker forgets them once it completes)."""
        return {"offset": self.offset, "chain": self.chain.get_state(),
                "dead": self.dead.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.offset = state.get("offset", 0)
        if state.get("chain") is not None:
            self.chain.set_state(state["chain"])
        self.dead.set_state(state.get("dead"))

    def info(self) -> StreamReport:
        split = self.source.splittable and self.role != "ops"
        return StreamReport(
            **self._report(), role=self.role, offset=self.offset,
            partitions=self.source.describe().get("partitions") if split else None,
            inflight=self.outbox.inflight(), waiting=self.inbox.waiting,
            held_keys=self.chain.held_keys,
            lag=self.pacer.lag() if self.pacer is not None else 0.0)

    # -- data -----------------------------------------------------------------------------
    def push(self, sender: str, seq: int, batch: pd.DataFrame, epoch: int = 0) -> None:
        """A batch from this stage's source actor (parallel stages only)."""
        if epoch < self.epoch or self.awaiting_rollback:
            return  # sent before a recovery: the source replays it
        if isinstance(batch, Barrier):
            k = batch.checkpoint
            self.inbox.barrier(sender, seq, k, 1, lambda: self._snapshot(k, epoch),
                               refuse=lambda why: self._refuse(k, why))
            return
        inbox = self.inbox
        with inbox.admit(sender, seq):
            if epoch < self.epoch or inbox is not self.inbox:
                return  # a recovery came while it waited: the source replays it
            if self.status in ("failed", "stopped"):
                return
            t0 = monotonic()
            try:
                self._process(batch, t0)
            except Exception as exc:
                self._fail(exc, "in the operator chain")

    def _run(self) -> None:
        spec = self.spec
        src = self.source
        with self._ckpt_lock:
            self._reading = True
        try:
            src.open()
            if self.offset:
                src.seek(self.offset)
            self.pacer = Pacer(getattr(src, "rate", None), spec.batch_size, spec.linger)
            shed = getattr(spec, "overload", "wait") == "shed"
            stop = self._stop
            while not stop.is_set():
                with self._ckpt_lock:
                    due = self._checkpoint_due.take()
                    commit, self._commit_due = self._commit_due, None
                for k in due:
                    self._snapshot(k)
                if commit is not None:
                    self._commit(src, commit)
                if self._settle.is_set():
                    self._park()
                    self.pacer.reset()  # as after a pause: no burst to make up the time
                    continue
                if not self._resume.is_set():
                    self._resume.wait(0.2)
                    self.pacer.reset()
                    self.reporter.flush()
                    continue
                n, ingest = self.pacer.take(stop)
                if n == 0:
                    continue
                batch = src.read(n)
                dead = self._collect(src)
                if batch is None:
                    self._advance(src, None, dead)
                    self._finish()
                    return
                got = len(batch)
                if got == 0:
                    self._advance(src, None, dead)
                    self.pacer.reset()
                    stop.wait(0.005)
                    self.reporter.flush()
                    continue
                self.pacer.consumed(got)
                t0 = monotonic()
                if INGEST_TS not in batch.columns:  # broker sources stamp when they read
                    batch[INGEST_TS] = ingest[:got] if got <= len(ingest) else ingest[-1]
                if shed and self.outbox.busy():  # drop, counted, rather than fall behind
                    self.reporter.count(events_in=got, shed=got)
                elif not self._ingest(batch, t0):
                    return  # failed: the position stays before this batch
                if self._stop is not stop:
                    return  # restored meanwhile: the position is the checkpoint's now
                # only now, the batch processed (or shed on purpose): a checkpoint taken
                # from here on covers it, and a failure above leaves it to be read again
                self._advance(src, batch, dead)
                self.reporter.gauge(lag_s=self.pacer.lag(), inflight=self.outbox.inflight())
                self.reporter.flush()
        except Exception as exc:
            self._fail(exc, "reading the source")
        finally:
            with self._ckpt_lock:  # a request that came as the loop ended is served here
                if self._stop is stop:  # not a loop that a restore has replaced
                    self._reading = False
                    due = self._checkpoint_due.take()
                    for k in due if not stop.is_set() else ():
                        self._snapshot(k)  # under the lock: before any request served directly
            try:
                src.close()
            except Exception:
                pass
            self.reporter.flush(force=True)

    def _advance(self, src: Any, batch: pd.DataFrame | None, dead: Sequence[int] = ()) -> None:
        """Move the stage's position past what was read and processed: the source's own
        ``position()`` (several partitions), else the last offset read plus one. Dead
        letters count as read: a checkpoint covers them too. Called once a batch went
        through the chain, never before: a batch that fails leaves the position before it."""
        position = src.position()
        if position is not None:
            self.offset = later(self.offset, position)
            return
        last = [int(batch[OFFSET].iloc[-1])] if batch is not None and len(batch) else []
        last += [int(o) for o in dead if o is not None and o >= 0]
        if last:
            self.offset = max(self.offset, max(last) + 1)

    def _collect(self, src: Any) -> list[int]:
        """File what a broker source could not decode, and report its health gauges.
        Returns the offsets of the dead letters (the position moves past them with the
        batch read with them)."""
        take = getattr(src, "take_dead_letters", None)
        dead = take() if take is not None else ()
        for payload, reason, offset in dead:
            self.dead.add_raw(payload, reason, offset)
        if dead:
            self.reporter.count(dead_letters=len(dead))
        offsets = [o for _, _, o in dead if o is not None]
        health = getattr(src, "health", None)
        if health is None:
            return offsets
        gauges = health()
        self.reporter.gauge(**gauges)
        retrying = bool(gauges.get("retrying"))
        if retrying != getattr(self, "_source_retrying", False) and self.monitor is not None:
            self._source_retrying = retrying
            self.reporter.flush(force=True)  # the gauges reach the monitor before the event
            detail = getattr(src, "last_error", "") if retrying else "source reachable again"
            self.monitor.event.remote(Event(self.name, "source retrying" if retrying
                                            else "source recovered", detail))
        return offsets

    # -- checkpoints and recovery ---------------------------------------------------------
    def request_checkpoint(self, k: int) -> None:
        """Take checkpoint ``k`` at the next batch boundary (now, if the loop has ended or
        not started: holding the lock, so the loop starts after the barrier is sent)."""
        with self._ckpt_lock:
            self._checkpoint_due.add(k)
            if self._reading:
                return
            for j in self._checkpoint_due.take():
                self._snapshot(j)

    def checkpoint_done(self, k: int, offset: Any) -> None:
        """Checkpoint ``k`` is complete and covers the source up to ``offset``: the source
        may acknowledge it to its broker (Redis XACK, a Kafka commit). Done by the reading
        loop, which owns the source's connection, or now if the loop has ended."""
        with self._ckpt_lock:
            if self._reading:
                self._commit_due = later(self._commit_due, offset)
                return
        self._commit(self.source, offset)

    def _commit(self, src: Any, offset: Any) -> None:
        if self.status == "failed":  # the broker keeps what a failed stage has not processed
            return
        try:
            src.commit(offset)
        except Exception as exc:  # the next checkpoint commits again; replay covers the rest
            self.reporter.count(commit_errors=1)
            self.last_commit_error = f"offset {offset}: {type(exc).__name__}: {exc}"

    def _snapshot(self, k: int, epoch: int | None = None) -> None:
        """Record this actor's state for checkpoint ``k`` and pass the barrier downstream
        (a failed actor, or one Ray restarted that awaits the rollback, refuses it: the
        checkpoint would cover what it never processed). A barrier of an earlier epoch
        (``epoch``) that waited through a recovery takes nothing."""
        if epoch is not None and epoch < self.epoch:
            return
        if self._refuses(k):
            return
        state = self.get_state()
        self._get_controller().ack.remote(self.name, slot(self.role, self.index), k, state)
        self.outbox.broadcast(Barrier(k))

    def restore(self, state: dict[str, Any] | None, epoch: int) -> str:
        """Go back to a checkpoint's state (or the start) and run from there."""
        running = self._thread is not None and self._thread.is_alive()
        self._stop.set()
        self._resume.set()
        self.outbox.abandon()  # the reading loop may be waiting on a receiver that died
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self.monitor is not None:
                # not expected (every wait of the loop ends within seconds once stopped);
                # said, since two loops would read one source and send in the new epoch
                self.monitor.event.remote(Event(
                    self.name, "reader still running",
                    "the reading loop had not ended 10 s after the restore stopped it"))
        # holding the processing slot: no push of the old epoch is half-way through the
        # chain (it would send its output on, stamped with the new epoch, and be learned
        # again when the source replays it)
        with self.inbox.exclusive():
            return self._reset(state, epoch, running)

    def _reset(self, state: dict[str, Any] | None, epoch: int, running: bool) -> str:
        self.awaiting_rollback = False
        self._thread = None
        self._stop = threading.Event()
        self.epoch = epoch
        self.outbox.reset(epoch)
        self.inbox = Inbox()
        self.chain = Chain(copy.deepcopy(list(self.spec.operators)))
        self.offset = 0
        self.dead.set_state(None)  # the checkpoint's come back; later ones are filed again
        self._checkpoint_due = CheckpointRequests()
        self._commit_due = None
        self._defined_paused = False
        if state:
            self.set_state(state)
        if self.status in ("failed", "finished", "stopped", "starting") or running:
            self.status = "running"
        return self.status

    def _ingest(self, batch: pd.DataFrame, t0: float) -> bool:
        """Validate a batch read and process it (or, a source actor, hand it to the ops
        actors). False if the chain failed: the stage is failed and its reading stops."""
        if self.schema is None:
            self.schema = getattr(self.source, "schema", None) or Schema.infer(batch)
        good, bad, reasons = self.schema.split(batch)
        if len(bad):
            self.dead.add(bad, reasons)
            self.reporter.count(dead_letters=len(bad))
        if self.role == "source":
            self.reporter.count(events_in=len(batch), events_out=len(good))
            self.reporter.latency(monotonic() - t0)
            n = self.outbox.target_count(OPS)
            key = self.spec.key
            if key is not None:
                keyed = good.assign(_key=good[key] if isinstance(key, str) else key(good))
                parts = partition(keyed, n)
            else:  # no key: whole batches, round robin
                turn, self._rr = self._rr % n, self._rr + 1
                parts = [good if i == turn else None for i in range(n)]
            self.outbox.send(None, parts={OPS: parts})
            return True
        try:
            self._process(good, t0, events_in=len(batch))
        except Exception as exc:
            self._fail(exc, "in the operator chain")
            self._stop.set()
            return False
        return True

    def _process(self, batch: pd.DataFrame, t0: float, events_in: int | None = None) -> None:
        out = self.chain.process(batch)
        for name, side in self.chain.side_outputs().items():
            if side is not None and len(side):
                self.reporter.count(**{name: len(side)})
                if name == "late":
                    self.dead.add(side, "late event (window already closed)")
        if self.role == "ops":  # the source actor counted these events in already
            self.reporter.count(ops_in=len(batch), events_out=len(out))
        else:
            self.reporter.count(events_in=len(batch) if events_in is None else events_in,
                                events_out=len(out))
        self.reporter.latency(monotonic() - t0)
        if len(out):
            self.last_output = out  # peek() takes the tail when asked: no copy per batch
            if self.outbox.has_targets:
                self.outbox.send(out)
        self.reporter.flush()

    def _finish(self) -> None:
        """The source is exhausted: flush open windows and wait for downstream."""
        tail = self.chain.flush()
        if self.role == "source":
            self.outbox.drain()  # the ops actors take every batch before they flush
            for h in self.outbox._targets.get(OPS, []):
                ray.get(h.flush_chain.remote())
        else:
            if tail is not None and len(tail):
                self.last_output = tail.tail(PEEK_ROWS)
                self.outbox.send(tail)
            self.outbox.broadcast(EndOfStream(self.name))  # after its last batch, in order
        self.outbox.drain()
        self.status = "finished"

    def flush_chain(self) -> None:
        with self.inbox.exclusive():
            tail = self.chain.flush()
            if tail is not None and len(tail):
                self.outbox.send(tail)
            self.outbox.broadcast(EndOfStream(self.name))
            self.outbox.drain()
            self.status = "finished"
