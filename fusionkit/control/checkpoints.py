"""The checkpoint coordinator: consistent checkpoints of every pipeline, taken while it runs.

A checkpoint ``k`` starts at the readers of each stream (``request_checkpoint``): each puts
a barrier in its output after the batch it read last, every actor saves its state when the
barrier has reached it from all its inputs (``ack``), and the last state completes the
checkpoint, written with the stage table so that ``restore()`` can start the pipeline from
it. A checkpoint holds no pipeline with a failed stage: that pipeline's states are carried
over from the last checkpoint that covered it, so the failed stage's events stay there (and
at the broker, which is acknowledged only up to checkpoints, one late) until it is defined
again.

The *epoch* numbers the pipeline's lives: a rollback or recovery starts a new one, and what
an actor of an earlier epoch still sends (an ack, a batch) is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import ray

from fusionkit._clock import now
from fusionkit._rpc import through_restart
from fusionkit.control.table import StageRecord, StageTable, slots
from fusionkit.runtime.checkpoint import CheckpointStore
from fusionkit.runtime.records import Event

TABLE_FILE = "stages.pkl"
# checkpoint ids after a controller restart skip ahead, so a barrier still travelling from
# before the restart is never taken for a new checkpoint's; the next id is saved at least
# every CKPT_ID_GAP // 2 ids, so no id is ever handed out twice (a receiver passes over a
# barrier of an id at or below one it has seen: channel.Inbox.barrier)
CKPT_ID_GAP = 16
STALE_AFTER = 60.0  # a checkpoint pending longer is abandoned (an actor that never acked)

log = logging.getLogger("fusionkit")


class CheckpointCoordinator:
    """Checkpoint ids, the checkpoints under way, the failed stages that hold them back,
    the epoch, and the last checkpoint completed.

    ``stages`` and ``lock`` are the controller's own (a checkpoint starts from a consistent
    view of the table); ``snapshot(names)`` pickles the stage table of those stages (None if
    it cannot) and ``persist()`` writes the controller's table, so its next id survives."""

    def __init__(self, store: CheckpointStore | None, every: float | None, stages: StageTable,
                 lock: threading.RLock, monitor: Any, registry: Any,
                 snapshot: Callable[[set[str]], bytes | None], persist: Callable[[], None]):
        self.store, self.every, self.stages, self.lock = store, every, stages, lock
        self.monitor, self.registry = monitor, registry
        self.snapshot, self.persist = snapshot, persist
        self.next = (store.latest() or 0) + 1 if store else 1
        self.pending: dict[int, dict[str, Any]] = {}
        self.failed: dict[str, tuple[str, str]] = {}  # actor id -> (stage, error)
        self.done = threading.Condition()
        self.last: tuple[int, float] | None = None  # (id, time) of the last one completed
        self.epoch = 0
        self._uncommitted: tuple | None = None  # (k, epoch, states, generations): see
        # _commit_sources

    def start(self) -> None:
        """Take checkpoints every ``every`` seconds from now on (with a store to keep them)."""
        if self.store is not None and self.every:
            threading.Thread(target=self._loop, daemon=True, name="fk-ckpt").start()

    def _loop(self) -> None:
        while True:
            threading.Event().wait(self.every)
            with self.done:
                stale = [k for k, p in self.pending.items() if now() - p["started"] > STALE_AFTER]
                for k in stale:
                    del self.pending[k]
                busy = bool(self.pending)
            if not busy:
                try:
                    self.trigger()
                except Exception:  # a stage being replaced: try again next time
                    pass

    def checkpoint(self, timeout: float = 30.0) -> int | None:
        """Take a consistent checkpoint of every pipeline now; return its id when complete."""
        k = self.trigger()
        if k is None:
            return None
        with self.done:
            self.done.wait_for(lambda: k not in self.pending, timeout=timeout)
            last = self.last
        # a later checkpoint that completed first ends this one (a reader that took the
        # later request first skips it) and covers everything before this call: its id
        return last[0] if last and last[0] >= k else None

    def trigger(self) -> int | None:
        """Start checkpoint ``k`` at every reader of a pipeline with no failed stage."""
        with self.lock:
            if self.store is None or not self.stages:
                return None
            expected = set()
            readers = []
            failed = self.failed_stages()
            held = []  # pipelines with a failed stage: not checkpointed, their last kept
            for group in self.stages.groups():  # a join's two streams are one pipeline
                if not any(rec.kind == "stream" for rec in group):
                    continue  # nothing reads: no barrier would reach it
                if failed & {rec.name for rec in group}:
                    held += group
                    continue
                for rec in group:
                    expected |= {(rec.name, slot) for slot, _ in slots(rec)}
                    if rec.kind == "stream":
                        readers += rec.readers
            if not expected:
                return None
            carried = self._carried(held)
            k = self.next
            self.next += 1
            self.pending[k] = {"expected": expected, "states": {}, "started": now(),
                               "epoch": self.epoch, "carried": carried}
            for reader in readers:  # sent in id order (readers may still see them out of it)
                reader.request_checkpoint.remote(k)
        if k % (CKPT_ID_GAP // 2) == 0:
            self.persist()  # the next id, so a restarted controller never hands out k again
        return k

    def ack(self, stage: str, slot: str, k: int, state: Any) -> None:
        """An actor's state for checkpoint ``k``; the last one completes the checkpoint."""
        with self.done:
            pending = self.pending.get(k)
            if pending is None or pending["epoch"] != self.epoch:
                return
            pending["states"][(stage, slot)] = state
            if set(pending["states"]) < pending["expected"]:
                return
            del self.pending[k]
            covered = {name for name, _ in pending["expected"]}
            if covered & self.failed_stages():  # failed since the checkpoint started
                self.done.notify_all()
                return
            registry = self._registry_state()
            carried = pending.get("carried") or {}
            covered |= {name for name, _ in carried}
            gens = {r.name: r.generation for r in self.stages.values()
                    if r.kind == "serve" or r.name in covered}
            table = self.snapshot(covered)
            self.store.save(k, {**carried, **pending["states"]},
                            {"epoch": self.epoch, "generations": gens, "models": list(registry)},
                            blobs={TABLE_FILE: table} if table is not None else None)
            self.last = (k, now())
            for old in [j for j in self.pending if j < k]:
                del self.pending[old]
            self.done.notify_all()
            self._commit_sources(k, pending["states"])
        self.persist()

    def _commit_sources(self, k: int, states: dict[tuple[str, str], Any]) -> None:
        """Tell each stream's reading actors that a checkpoint covers their source up to the
        position saved in it, so a broker source acknowledges what it no longer needs.

        One checkpoint late: what checkpoint ``k`` covers is acknowledged when the next one
        completes (in the same epoch), so a recovery that falls back past an unreadable
        latest checkpoint (``CheckpointStore.load_newest``) still finds at the broker every
        event after the one it restores (Redis re-reads only entries not acknowledged)."""
        gens = {r.name: r.generation for r in self.stages.values()}
        previous, self._uncommitted = self._uncommitted, (k, self.epoch, states, gens)
        if previous is None or previous[1] != self.epoch:
            return
        k, _, states, gens = previous
        failed = self.failed_stages()
        for rec in self.stages.values():
            if rec.kind != "stream" or rec.name in failed or gens.get(rec.name) != rec.generation:
                continue
            for slot, reader in zip(rec.spec.reading_slots(), rec.readers, strict=True):
                state = states.get((rec.name, slot))
                if isinstance(state, dict) and state.get("offset"):
                    reader.checkpoint_done.remote(k, state["offset"])

    def forget_offsets(self) -> None:
        """The pipeline goes back (or is replaced): the offsets of the last checkpoint are
        not acknowledged to its brokers."""
        self._uncommitted = None

    # -- failed stages: their pipelines are not checkpointed ---------------------------------
    def stage_failed(self, stage: str, error: str, actor_id: str | None = None) -> None:
        """An actor of ``stage`` failed (its user function or window raised). Until the stage
        is defined again (or restored, or recovered) no checkpoint of its pipeline starts or
        completes, and its sources acknowledge nothing more to their brokers: the broker
        and the last checkpoint keep every event the failed stage has not processed."""
        with self.done:
            self.failed[actor_id or f"?{stage}"] = (stage, error)
            for k in [k for k, p in self.pending.items()
                      if stage in {name for name, _ in p["expected"]}]:
                del self.pending[k]
            self.done.notify_all()

    def refuse(self, k: int, stage: str, reason: str) -> None:
        """An actor refused checkpoint ``k`` (it is failed): the checkpoint is abandoned."""
        with self.done:
            self.pending.pop(k, None)
            self.done.notify_all()

    def failed_stages(self) -> set[str]:
        """Stages with an actor that reported a failure and is still one of theirs."""
        live = {a._actor_id.hex(): r.name for r in self.stages.values() for a in r.all_actors}
        return {stage for aid, (stage, _) in list(self.failed.items())
                if live.get(aid) == stage or aid == f"?{stage}"}

    def clear_failed(self, recs: list[StageRecord]) -> None:
        """Forget the failures of these stages' actors (restored to a checkpoint, or gone)."""
        names = {r.name for r in recs}
        for aid in [aid for aid, (stage, _) in self.failed.items() if stage in names]:
            del self.failed[aid]

    def abandon(self) -> None:
        """Abandon every checkpoint under way (the pipelines are being replaced)."""
        with self.done:
            self.pending.clear()

    def new_epoch(self, restored: list[StageRecord] = ()) -> int:
        """Start a new epoch: what actors still send from the one before is dropped, the
        checkpoints under way are abandoned, and the failures of ``restored`` (stages put back
        to before them) forgotten. Returns the new epoch."""
        with self.done:
            self.epoch += 1
            self.pending.clear()
            self.clear_failed(list(restored))
            return self.epoch

    # -- what a checkpoint holds -------------------------------------------------------------
    def _carried(self, held: list[StageRecord]) -> dict[tuple[str, str], Any]:
        """The states of pipelines with a failed stage, from the last checkpoint that covers
        these very stages: a new checkpoint keeps them (so a recovery or ``restore()``
        still finds the failed pipeline as it was before it failed) instead of dropping
        them or recording what the failed stage never processed."""
        if not held or self.store is None or self.last is None:
            return {}
        k = self.last[0]
        try:
            gens = self.store.manifest(k).get("generations", {})
            if any(gens.get(r.name) != r.generation for r in held):
                return {}
            names = {r.name for r in held}
            return {key: st for key, st in self.store.load(k).items() if key[0] in names}
        except Exception:  # unreadable: the new checkpoint leaves these stages out
            return {}

    def _registry_state(self, wait: float = 30.0) -> Any:
        """The registry's state for a checkpoint, waiting through a restart of its process."""
        return through_restart(lambda: ray.get(self.registry.get_state.remote()), wait)

    def usable(self, recs: list[StageRecord]) -> tuple[int | None, dict]:
        """The last checkpoint this controller completed that covers these very stages (the
        same definitions, not an earlier version of a re-defined stage), with its states;
        else none. Its broker offsets are no longer acknowledged: a rollback."""
        if self.store is None or self.last is None:
            return None, {}

        def same(manifest: dict[str, Any]) -> bool:
            gens = manifest.get("generations", {})
            return all(gens.get(r.name) == r.generation for r in recs)

        self.forget_offsets()
        k, states, skipped = self.store.load_newest(self.last[0], accept=same)
        self.report_fallback(recs[0].name, k, skipped)
        return k, states

    def report_fallback(self, stage: str, k: int | None, skipped: list[tuple[int, str]]) -> None:
        """Say (an event, a log line) that the newest checkpoints could not be loaded and
        which one was used instead."""
        for bad, why in skipped:
            used = f"checkpoint {k}" if k is not None else "no checkpoint (from the start)"
            detail = f"checkpoint {bad} could not be loaded ({why}); recovering from {used}"
            log.warning("fusionkit: %s", detail)
            self.monitor.event.remote(Event(stage, "checkpoint fallback", detail,
                                            extra=(("checkpoint", bad), ("used", k))))

    def info(self) -> dict[str, Any]:
        """The last checkpoint, its age and the folder checkpoints go to."""
        last = self.last
        return {"checkpoint": last[0] if last else None,
                "age_s": now() - last[1] if last else None,
                "folder": str(self.store.folder) if self.store else None}

    # -- the controller's table -----------------------------------------------------------
    def saved(self) -> dict[str, Any]:
        """What the controller's table keeps of the coordinator."""
        return {"epoch": self.epoch, "ckpt_next": self.next,
                "last_checkpoint": self.last[0] if self.last else None}

    def adopt(self, table: dict[str, Any]) -> None:
        """Take the state a controller that died saved in its table: a higher epoch than any
        actor may have been given, ids that skip ahead, its last checkpoint if complete."""
        self.epoch = table["epoch"] + 1
        if self.store is None:
            return
        self.next = max(table.get("ckpt_next", 1), (self.store.latest() or 0) + 1) + CKPT_ID_GAP
        k = table.get("last_checkpoint")
        done = [j for j in self.store.complete() if k is not None and j <= k]
        if done:  # the newest one may be unreadable: recovering falls back from it
            try:
                self.last = (done[-1], self.store.manifest(done[-1])["time"])
            except Exception:
                self.last = (done[-1], now())
