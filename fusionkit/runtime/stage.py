"""What every stage actor shares: status, failure capture, metric reports, dead letters."""

from __future__ import annotations

import os
import threading
import traceback
from typing import Any

import numpy as np
import ray

from fusionkit._clock import monotonic, now
from fusionkit.runtime.checkpoint import Barrier
from fusionkit.runtime.dead_letters import DeadLetters
from fusionkit.runtime.records import Event
from fusionkit.runtime.reports import StageActorReport
from fusionkit.runtime.specs import slot

STATUSES = ("starting", "running", "waiting", "paused", "failed", "stopped", "finished")


class Reporter:
    """Accumulates an actor's counters and latencies; sends them to the monitor in batches.

    At most one report is in flight, so a slow monitor never piles up calls.
    """

    def __init__(self, monitor: Any, stage: str, kind: str, actor: int, interval: float = 0.5):
        self.monitor = monitor
        self.stage = stage
        self.kind = kind
        self.actor = actor
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: dict[str, float] = {}
        self._latency: list[float] = []
        self._values: dict[str, Any] = {}
        self._last = monotonic()
        self._pending = None
        self.totals: dict[str, float] = {}

    def count(self, **counters: float) -> None:
        with self._lock:
            for k, v in counters.items():
                self._counts[k] = self._counts.get(k, 0) + v
                self.totals[k] = self.totals.get(k, 0) + v

    def latency(self, seconds: float) -> None:
        with self._lock:
            if len(self._latency) < 4096:
                self._latency.append(seconds)

    def gauge(self, **values: Any) -> None:
        with self._lock:
            self._values.update(values)

    def due(self) -> bool:
        """Whether the next ``flush`` sends a report (values dear to compute are gauged
        only then)."""
        return monotonic() - self._last >= self.interval

    def flush(self, force: bool = False) -> None:
        t = monotonic()
        if not force and t - self._last < self.interval:
            return
        if self.monitor is not None and self._pending is not None and not force:
            ready, _ = ray.wait([self._pending], timeout=0)
            if not ready:
                return  # monitor is behind: the counts stay and go with the next report
        with self._lock:
            if not force and t - self._last < self.interval:
                return
            interval, self._last = t - self._last, t
            row = {"time": now(), "stage": self.stage, "kind": self.kind, "actor": self.actor,
                   "interval": interval, **self._counts,
                   "latency": np.asarray(self._latency, dtype="float64"),
                   "values": dict(self._values)}
            self._counts = {}
            self._latency = []
        if self.monitor is None:
            return
        self._pending = self.monitor.report.remote([row])


class StageActor:
    """Base of the stage actors: lifecycle, status and failure capture."""

    kind = "stage"

    def __init__(self, name: str, index: int, monitor: Any):
        self.name = name
        self.index = index
        self.status = "starting"
        self.error: str | None = None
        self.traceback: str | None = None
        self.started = now()
        self.monitor = monitor
        self.reporter = Reporter(monitor, name, self.kind, index)
        self.dead = DeadLetters(name)
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()
        ctx = ray.get_runtime_context()
        self.restarted = ctx.was_current_actor_reconstructed
        # Ray restarted this process: until the controller rolls the pipeline back
        # (``restore``) it takes no batch and refuses every checkpoint. What reaches it
        # meanwhile was sent to the process that died, and what that process had taken in
        # or queued to send went with it: a checkpoint passing through here would cover
        # events nobody processed. The rollback replays all of it.
        self.awaiting_rollback = self.restarted

    def _fail(self, exc: BaseException, where: str = "") -> None:
        self.status = "failed"
        self.error = f"{type(exc).__name__}: {exc}"
        self.traceback = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if self.monitor is not None:
            self.monitor.event.remote(Event(self.name, "failed",
                                            (where + " " + self.error).strip()))
        try:  # no checkpoint of this pipeline completes until the stage is defined again
            self._get_controller().stage_failed.remote(
                self.name, self.error, ray.get_runtime_context().get_actor_id())
        except Exception:  # no controller (an actor used on its own): _snapshot refuses
            pass

    def _get_controller(self) -> Any:
        if getattr(self, "_controller", None) is None:
            from fusionkit.runtime.names import CONTROLLER, NAMESPACE

            self._controller = ray.get_actor(CONTROLLER, namespace=NAMESPACE)
        return self._controller

    def _refuse(self, k: int, why: str) -> None:
        """Checkpoint ``k`` cannot complete here (``why``): the controller abandons it."""
        self._get_controller().refuse.remote(k, self.name, why)

    def _refuses(self, k: int) -> bool:
        """Refuse checkpoint ``k`` if this actor cannot take part in it, and say so: a failed
        actor dropped batches since it failed, and one Ray restarted that awaits the
        rollback lost what the process before it had taken in; either way the checkpoint
        would cover events it never processed."""
        if self.status == "failed":
            why = self.error or "failed"
        elif self.awaiting_rollback:
            why = "restarted, awaiting the rollback"
        else:
            return False
        self._refuse(k, why)
        return True

    def _arrives(self, sender: str, seq: int, batch: Any, epoch: int) -> bool:
        """The start of a push to an actor that takes a stage's batches (train, join, table):
        False for a push of an earlier epoch (the source replays it) or to an actor awaiting
        its rollback; while paused, wait (upstream backs up); a checkpoint barrier aligns
        over the ``upstream`` senders, then snapshots (``_snapshot``). True: a batch (or an
        end of stream) to take, in its turn."""
        if epoch < self.epoch or self.awaiting_rollback:
            return False
        # paused: wait before taking the processing slot, so upstream backs up (barriers
        # too, keeping checkpoints aligned) while calls outside a push still get it
        while not self._resume.is_set() and not self._stop.is_set():
            self._resume.wait(0.2)
        if isinstance(batch, Barrier):
            k = batch.checkpoint
            self.inbox.barrier(sender, seq, k, self.upstream, lambda: self._snapshot(k, epoch),
                               refuse=lambda why: self._refuse(k, why))
            return False
        return True

    def _snapshot(self, k: int, epoch: int | None = None) -> None:
        """Checkpoint ``k`` has aligned here: send this actor's state to the controller,
        under its slot (its kind and index), unless the barrier waited through a recovery
        or the actor cannot take part (failed, or restarted and awaiting the rollback)."""
        if epoch is not None and epoch < self.epoch:
            return
        if self._refuses(k):
            return
        self._get_controller().ack.remote(self.name, slot(self.kind, self.index), k,
                                          self.get_state())

    def ready(self) -> bool:
        return True

    def needs_rollback(self) -> bool:
        """Whether Ray restarted this actor and its pipeline has not been rolled back yet
        (a controller restarted meanwhile asks, and rolls it back)."""
        return self.awaiting_rollback

    def fail(self, why: str) -> str:
        """Fail this actor with ``why`` (the controller could not bring its pipeline back)."""
        self._fail(RuntimeError(why), "")
        return self.status

    def pause(self) -> str:
        if self.status in ("running", "waiting"):
            self._resume.clear()
            self.status = "paused"
        return self.status

    def resume(self) -> str:
        if self.status in ("paused", "waiting"):
            self.status = "running"
            self._resume.set()
        return self.status

    def stop(self) -> str:
        self._stop.set()
        self._resume.set()
        if self.status not in ("failed", "finished"):
            self.status = "stopped"
        self.reporter.flush(force=True)
        return self.status

    def _report(self) -> dict[str, Any]:
        """The fields of ``StageActorReport``, for a kind's ``info`` to add its own to."""
        return {"stage": self.name, "index": self.index, "kind": self.kind,
                "status": self.status, "error": self.error, "traceback": self.traceback,
                "totals": dict(self.reporter.totals), "dead_letters": self.dead.count,
                "dead_letters_dropped": self.dead.dropped, "pid": os.getpid(),
                "node": ray.get_runtime_context().get_node_id(), "started": self.started,
                "restarted": self.restarted}

    def info(self) -> StageActorReport:
        """What this actor reports about itself (the controller's ``infos``)."""
        return StageActorReport(**self._report())

    def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.dead.items(limit)
