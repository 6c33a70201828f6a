"""The actor of a join stage: an interval join of two stream stages, run on Ray.

It takes the pushes of every actor of both upstream streams (a push's sender names its
stage, so the actor knows which input it is), runs :class:`~fusionkit.streaming.join.
IntervalJoin` over them and pushes the examples on exactly as a stream stage pushes its
output, so a train stage defined ``on=`` the join learns them unchanged.

- **Parallelism**: with ``parallelism=N`` each of the N actors is sent every batch of both
  inputs (put once in the object store, shared) and joins the keys of its part (a stable
  hash); its watermark moves with every event, so the N actors together emit what one
  would. Each sends its examples to the train stages, which align barriers over all N.
- **Channels**: each actor of an input stream is a channel of the join's watermark (the
  ``i`` of its sender name): N actors of one stream each send in order, but not in order
  together, so an input's progress is its slowest actor's (an actor that has ended holds
  nothing back). A stream with ``parallelism=2`` needs no ``allowed_lateness`` for one of
  its actors running ahead of the other.
- **Time passing**: a ticker lets processing time reach the join (``advance``) about four
  times per ``idle``, so an input that went quiet stops holding the watermark back and
  windows close when traffic stops.
- **Ends**: a stream stage whose bounded source is exhausted sends ``EndOfStream`` after
  its last batch; once every actor of an input has, the join ``end``\\ s that input (it
  holds nothing back: when both have ended every window closes and the stage finishes).
- **Checkpoints**: a barrier aligns over every sender of both inputs; the snapshot holds
  the join's state and the dead letters, and the barrier goes on to the train stages.
  ``restore`` puts the state back in a new epoch with its pipeline (both streams, the
  join and its train stages roll back together); the inputs count as active from then on,
  so the time the rollback took does not make one of them idle.
- **Freshness**: an example's ``_ingest_ts`` is when the join completed it (its label
  arrived, or its window closed), not when its left event came in: ``fk.freshness`` of
  the train stage then measures the loop, from a complete example to the first version
  (and answer) that learned it, without the label's own delay.
- **Side outputs**: rows without a usable key or event time, late outcomes and orphans go
  to the stage's dead letters with their reason; the counters (pending, joined, timed out,
  late, orphans, overflow, label delay p50/p99) go to ``info()`` and the monitor.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from fusionkit._clock import monotonic, now
from fusionkit.batch import INGEST_TS
from fusionkit.runtime.channel import Inbox, Outbox
from fusionkit.runtime.checkpoint import Barrier, EndOfStream
from fusionkit.runtime.records import Event
from fusionkit.runtime.reports import JoinReport
from fusionkit.runtime.specs import JoinSpec, slot
from fusionkit.runtime.stage import StageActor
from fusionkit.streaming.join import IntervalJoin
from fusionkit.streaming.join_input import REASON

PEEK_ROWS = 1000
_COUNTED = ("joined", "timed_out", "late", "corrections", "orphans", "duplicates", "overflow",
            "late_left", "dead")


def make_join(spec: JoinSpec, index: int = 0, channels: tuple[int, int] = (1, 1)
              ) -> IntervalJoin:
    """A fresh join of the spec's parameters, for its actor ``index`` (of ``parallelism``),
    its inputs sent by ``channels`` actors each."""
    return IntervalJoin(on=spec.on, within=spec.within, label=spec.label, default=spec.default,
                        allowed_lateness=spec.allowed_lateness, idle=spec.idle, late=spec.late,
                        late_horizon=spec.late_horizon, max_pending=spec.max_pending,
                        key_type=spec.key_type, share=(index, spec.parallelism),
                        channels=channels)


def sender_stage(sender: str) -> str:
    """The stage of a push's sender (``"<stage>/<role><i>/<id>"``, see ``channel.Outbox``)."""
    return sender.rsplit("/", 2)[0]


def sender_index(sender: str) -> int:
    """Which actor of its stage a push's sender is (the ``i`` of ``<role><i>``)."""
    role = sender.rsplit("/", 2)[1]
    digits = len(role) - len(role.rstrip("0123456789"))
    return int(role[-digits:]) if digits else 0


class JoinWorker(StageActor):
    kind = "join"

    def __init__(self, spec: JoinSpec, index: int, monitor: Any, state: dict | None = None):
        super().__init__(spec.name, index, monitor)
        self.spec = spec
        self.upstream = 2  # senders in all (barriers align over them)
        self.senders = {spec.left: 1, spec.right: 1}  # actors of each input
        self.join = make_join(spec, index, self._channels())
        self._channels_set = self._channels()
        self.inbox = Inbox()
        self.outbox = Outbox(f"{spec.name}/join{index}", spec.max_inflight)
        self.epoch = 0
        self._ended: dict[str, set[str]] = {spec.left: set(), spec.right: set()}  # senders
        self.ended: set[str] = set()  # the inputs that have ended (every sender of theirs)
        self._controller = None
        self._ticker: threading.Thread | None = None
        self.examples_out = 0
        self.last_output: pd.DataFrame | None = None
        if state:
            self.set_state(state)

    # -- control --------------------------------------------------------------------------
    def probe(self) -> dict[str, Any]:
        return {"ok": True}

    def start(self, targets: dict[str, list[Any]] | None = None, epoch: int | None = None
              ) -> str:
        if epoch is not None and epoch > self.epoch:  # a pipeline that recovered before
            self.epoch = self.outbox.epoch = epoch
        if targets is not None:
            self.outbox.set_targets(targets)
        if self.status in ("starting", "failed", "stopped"):
            self.status = "running"
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True,
                                            name=f"fk-{self.name}")
            self._ticker.start()
        return self.status

    def set_targets(self, targets: dict[str, list[Any]]) -> None:
        self.outbox.set_targets(targets)

    def set_upstream(self, n: int | dict[str, int]) -> None:
        """How many actors send to this one: per input stage (``{stage: n}``), or in all."""
        if isinstance(n, dict):
            self.senders = {s: max(1, int(c)) for s, c in n.items()}
            self.upstream = sum(self.senders.values())
        else:
            self.upstream = max(1, int(n))

    def _channels(self) -> tuple[int, int]:
        """How many actors send each input (its watermark's channels)."""
        return self.senders.get(self.spec.left, 1), self.senders.get(self.spec.right, 1)

    def stop(self) -> str:
        status = super().stop()
        self.outbox.abandon()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        return status

    def peek(self, n: int = 5) -> pd.DataFrame | None:
        return None if self.last_output is None else self.last_output.tail(n)

    def stats(self) -> dict[str, Any]:
        """The join's counters, watermark, rows held and label delay percentiles."""
        return self.join.stats()

    def info(self) -> JoinReport:
        return JoinReport(
            **self._report(), examples=self.examples_out, waiting=self.inbox.waiting,
            inflight=self.outbox.inflight(),
            ended=tuple(s for s in (self.spec.left, self.spec.right) if self._side_ended(s)),
            **JoinReport.counts_of(self.join.stats()))

    def get_state(self) -> dict[str, Any]:
        return {"join": self.join.get_state(), "dead": self.dead.get_state(),
                "examples": self.examples_out, "ended": sorted(self.ended)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.join = make_join(self.spec, self.index, self._channels())
        self._channels_set = self._channels()
        if state.get("join") is not None:
            self.join.set_state(state["join"])
            # the inputs count as active from now on: the time a rollback or a restart
            # took is no input's silence
            self.join.forget_idle_clocks()
        self.dead.set_state(state.get("dead"))
        self.examples_out = state.get("examples", 0)
        self.ended = set(state.get("ended", ()))

    # -- data -----------------------------------------------------------------------------
    def push(self, sender: str, seq: int, batch: Any, epoch: int = 0) -> None:
        if not self._arrives(sender, seq, batch, epoch):
            return
        inbox = self.inbox
        with inbox.admit(sender, seq):
            if epoch < self.epoch or inbox is not self.inbox:
                return
            if self.status in ("failed", "stopped"):
                return
            try:
                if isinstance(batch, EndOfStream):
                    self._input_ended(sender)
                else:
                    self._take(sender, batch)
            except Exception as exc:
                self._fail(exc, "in the join")

    def _side(self, stage: str) -> str:
        if stage == self.spec.left:
            return "left"
        if stage == self.spec.right:
            return "right"
        raise ValueError(f"a batch from stage {stage!r}, which is neither input of join "
                         f"{self.name!r} ({self.spec.left!r}, {self.spec.right!r})")

    def _take(self, sender: str, batch: pd.DataFrame) -> None:
        t0 = monotonic()
        side = self._side(sender_stage(sender))
        before = dict(self.join.counts)
        channel = self._channel(side, sender)
        if side == "left":
            out = self.join.process_left(batch, channel=channel)
        else:
            out = self.join.process_right(batch, channel=channel)
        # the events this actor took: its part's (of parallelism N), the unusable ones once
        taken = sum(self.join.counts[c] - before[c] for c in (f"{side}s", "dead"))
        self._emit(out, before, **{f"{side}_in": taken}, events_in=taken)
        self.reporter.latency(monotonic() - t0)

    def _input_ended(self, sender: str) -> None:
        stage = sender_stage(sender)
        side = self._side(stage)
        self._ended[stage].add(sender)
        if stage in self.ended:
            return
        before = dict(self.join.counts)
        if not self._side_ended(stage):  # that actor holds nothing back any more
            self._emit(self.join.end(side, channel=self._channel(side, sender)), before)
            return
        self.ended.add(stage)
        self._emit(self.join.end(side), before)
        if self.monitor is not None:
            self.monitor.event.remote(Event(self.name, "input ended",
                                            f"{side} input {stage!r} has ended"))
        if all(self._side_ended(s) for s in (self.spec.left, self.spec.right)):
            self.status = "finished"

    def _channel(self, side: str, sender: str) -> int:
        """The watermark channel of a push's sender (in the push's slot: the join's channels
        follow ``set_upstream``, an actor beyond its count widens them)."""
        want = self._channels()
        if want != self._channels_set:  # its inputs' actors were counted again
            self.join.set_channels(*want)
            self._channels_set = want
        channel, i = sender_index(sender), int(side == "right")
        if channel >= self.join.channels[i]:
            wider = list(self.join.channels)
            wider[i] = channel + 1
            self.join.set_channels(*wider)
        return channel

    def _side_ended(self, stage: str) -> bool:
        return stage in self.ended or len(self._ended.get(stage, ())) >= self.senders.get(stage, 1)

    def _emit(self, out: pd.DataFrame, before: dict[str, int], **counts: int) -> None:
        """Hand the examples on, file the side outputs, count what the join did."""
        for rows in self.join.side_outputs().values():
            if len(rows):
                self.dead.add(rows.drop(columns=[REASON]), rows[REASON])
        now_counts = self.join.counts
        delta = {k: now_counts[k] - before.get(k, 0) for k in _COUNTED
                 if now_counts[k] != before.get(k, 0)}
        self.reporter.count(**counts, **delta, events_out=len(out),
                            dead_letters=delta.get("dead", 0) + delta.get("orphans", 0)
                            + (delta.get("late", 0) if self.spec.late == "side" else 0))
        self.reporter.gauge(pending=self.join.pending, watermark=self.join.watermark,
                            inflight=self.outbox.inflight())
        self._gauge_delays()
        if len(out):
            if INGEST_TS in out.columns:  # an example comes in when it is complete
                out[INGEST_TS] = now()
            self.examples_out += len(out)
            self.last_output = out
            if self.outbox.has_targets:
                self.outbox.send(out)
        self.reporter.flush()

    def _gauge_delays(self) -> None:
        """The label delay percentiles, computed only for a report that leaves now."""
        if self.reporter.due():
            stats = self.join.stats()
            self.reporter.gauge(label_delay_p50=stats["label_delay_p50"],
                                label_delay_p99=stats["label_delay_p99"])

    def _tick(self) -> None:
        """Let processing time reach the join while no batch comes (inputs go idle, windows
        close), and report metrics meanwhile."""
        idle = self.spec.idle
        wait = min(0.5, idle / 4) if idle else 0.5
        stop = self._stop
        while not stop.wait(wait):
            if not self._resume.is_set() or self.awaiting_rollback:
                continue
            with self.inbox.exclusive():
                if self.status != "running":
                    continue
                try:
                    if idle is not None:
                        before = dict(self.join.counts)
                        self._emit(self.join.advance(), before)
                    else:
                        self._gauge_delays()
                        self.reporter.flush()
                except Exception as exc:
                    self._fail(exc, "in the join (advancing time)")

    # -- checkpoints and recovery ---------------------------------------------------------
    def _snapshot(self, k: int, epoch: int | None = None) -> None:
        if epoch is not None and epoch < self.epoch:
            return  # a barrier that waited through a recovery
        if self._refuses(k):
            return
        self._get_controller().ack.remote(self.name, slot("join", self.index), k, self.get_state())
        self.outbox.broadcast(Barrier(k))

    def restore(self, state: dict[str, Any] | None, epoch: int) -> str:
        """Go back to a checkpoint's state (or the start) in epoch ``epoch``; the upstream
        streams replay what came after it."""
        self.outbox.abandon()  # a send may wait on a train actor that died
        with self.inbox.exclusive():
            self.awaiting_rollback = False
            self.epoch = epoch
            self.outbox.reset(epoch)
            self.inbox = Inbox()
            self._ended = {self.spec.left: set(), self.spec.right: set()}
            self.join = make_join(self.spec, self.index, self._channels())
            self._channels_set = self._channels()
            self.examples_out = 0
            self.ended = set()
            self.dead.set_state(None)
            if state:
                self.set_state(state)
            if self.status in ("starting", "failed", "finished", "stopped"):
                self.status = "running"
        if self._ticker is None:
            self.start()
        return self.status
