"""Recovery: a pipeline that lost or failed an actor goes back to its last checkpoint.

Three ways back, one rule (every event learned once):

- a stage host Ray restarted (``host_restarted``) becomes its stage actor again, and its
  whole pipeline is restored to the last checkpoint in a new epoch (``recover``);
- a failed stream stage defined again starts where the failed one stopped, or, for a stage
  of a source actor and operator actors, goes back to the last checkpoint with its train
  stages (``taken_up``);
- a restarted controller whose adopted pipeline lost an actor starts it again on fresh hosts
  from its last checkpoint (``after_restart``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from fusionkit._clock import now
from fusionkit.control.checkpoints import CheckpointCoordinator
from fusionkit.control.persistence import entry
from fusionkit.control.pool import HostPool, wait_ready
from fusionkit.control.status import INFO_TIMEOUT
from fusionkit.control.table import KIND_ORDER, StageRecord, StageTable, slots, teardown
from fusionkit.runtime import records
from fusionkit.runtime.records import Assignment, Event
from fusionkit.runtime.specs import StreamSpec
from fusionkit.sources.base import later
from fusionkit.streaming.worker import OPS

log = logging.getLogger("fusionkit")
RECOVER_ATTEMPTS = 5  # tries of one pipeline's rollback before its stage is failed
ADOPT_TIMEOUT = 60.0  # an adopted actor busy restarting gets this long to answer


class Recovery:
    """Brings pipelines back to their last checkpoint, and keeps the log of it
    (``recoveries``, :class:`fusionkit.runtime.records.Recovery` records: what
    ``fk.recoveries()`` shows).

    ``launch(entries, states)`` starts stages on fresh hosts from their table entries (what
    a restarted controller does with a pipeline that lost an actor); ``persist()`` writes the
    controller's table."""

    def __init__(self, stages: StageTable, pool: HostPool, checkpoints: CheckpointCoordinator,
                 monitor: Any, lock: threading.RLock, persist: Callable[[], None],
                 launch: Callable[[list[dict[str, Any]], dict], None]):
        self.stages, self.pool, self.checkpoints = stages, pool, checkpoints
        self.monitor, self.lock, self.persist, self.launch = monitor, lock, persist, launch
        self.recoveries: list[records.Recovery] = []

    # -- a stage host restarted by Ray --------------------------------------------------------
    def host_restarted(self, actor_id: str) -> Assignment | None:
        """A stage host was restarted by Ray: tell it what it was, then roll its pipeline back."""
        again = self.pool.assignments.get(actor_id)
        if again is None:
            return None
        t0 = now()
        stage = again.spec.name
        threading.Thread(target=self.recover, args=(stage, t0), daemon=True,
                         name=f"fk-recover-{stage}").start()
        return again

    def recover(self, stage: str, t0: float) -> None:
        """Restore the pipeline of ``stage`` to its last checkpoint, in a new epoch, on the
        same actors (Ray restarted the one that died), and start its readers again.

        A try that fails (another actor of the pipeline killed while it is restored, an actor
        Ray is still restarting) is tried again from the start, in a new epoch: until the
        rollback completes the pipeline's actors take nothing and no checkpoint of it
        completes, so giving up would leave it stalled for good. After ``RECOVER_ATTEMPTS``
        the stage is failed with the reason, which ``fk.status()`` shows (defining it again
        or ``fk.restore()`` brings it back)."""
        for attempt in range(1, RECOVER_ATTEMPTS + 1):
            try:
                self._recover(stage, t0)
                return
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                log.warning("fusionkit: recovering %r, try %d of %d: %s", stage, attempt,
                            RECOVER_ATTEMPTS, why)
                self.monitor.event.remote(Event(stage, "recovery failed",
                                                f"try {attempt} of {RECOVER_ATTEMPTS}: {why}"))
                if attempt == RECOVER_ATTEMPTS:
                    self._give_up(stage, why)
                    return
                time.sleep(min(2.0 ** attempt, 15.0))

    def _give_up(self, stage: str, why: str) -> None:
        """Fail every actor of ``stage``'s pipeline (its streams, joins and train stages)
        with why its recovery failed."""
        with self.lock:
            for member in self.stages.group_of(stage):
                for actor in member.all_actors:
                    try:
                        ray.get(actor.fail.remote(f"the recovery to the last checkpoint "
                                                  f"failed: {why}"), timeout=INFO_TIMEOUT)
                    except Exception:
                        pass  # an actor that does not answer shows as failed already

    def _recover(self, stage: str, t0: float) -> None:
        with self.lock:
            rec = self.stages.get(stage)
            if rec is None:
                return
            group = self.stages.group_of(stage)  # streams, joins and trains, as one
            streams = [r for r in group if r.kind == "stream"]
            if not streams:
                return
            epoch = self.checkpoints.new_epoch(restored=group)
            self.persist()
            k, states = self.checkpoints.usable(group)
            steps: dict[str, float] = {"checkpoint": now() - t0}  # where the time went
            members = self._restore(group, states, epoch, steps)
            self._read_again(group)
            for member in members:
                member.extra["restarts"] = member.extra.get("restarts", 0) + (member.name == stage)
            done = now()
            self.recoveries.append(records.Recovery(
                stage, k, t0, done, tuple((n, round(v, 3)) for n, v in steps.items())))
            self.monitor.event.remote(Event(stage, "recovered", time=done,
                                            detail=f"restored checkpoint {k} in {done - t0:.2f}s"))
            self.persist()

    def _restore(self, members: list[StageRecord], states: dict, epoch: int,
                 steps: dict[str, float] | None = None) -> list[StageRecord]:
        """Put every actor of ``members`` back to its state in ``states`` in ``epoch``,
        downstream first (ready before the replay starts); the time of each step goes in
        ``steps``. Returns the members in that order."""
        steps = {} if steps is None else steps
        members = sorted(members, key=lambda r: KIND_ORDER.get(r.kind, 3))
        for member in members:
            for slot, actor in slots(member):
                t = now()
                wait_ready(actor)
                steps[f"{member.name}/{slot} ready"] = now() - t
                t = now()
                ray.get(actor.restore.remote(states.get((member.name, slot)), epoch))
                steps[f"{member.name}/{slot} restore"] = now() - t
        return members

    def _read_again(self, members: list[StageRecord]) -> None:
        """Wire the restored joins and streams of ``members`` again, and start the streams'
        readers from where they were restored."""
        for join in [r for r in members if r.kind == "join"]:
            self.stages.rewire(join.name)
        for stream in [r for r in members if r.kind == "stream"]:
            self.stages.rewire(stream.name)
            if stream.source is not None:
                ray.get(stream.source.set_targets.remote({OPS: stream.actors}))
            targets = self.stages.downstream_targets(stream.name)
            for slot, actor in slots(stream):
                if slot.startswith(("fused", "source")):
                    extra = {OPS: stream.actors} if stream.source is not None else targets
                    ray.get(actor.start.remote(extra))

    # -- a failed stream stage defined again -------------------------------------------------
    def taken_up(self, old: StageRecord, spec: StreamSpec) -> dict[str, Any]:
        """The states a stream stage defined again over a failed one starts from: where the
        failed one stopped (its readers' positions stay before the batch that failed, their
        operators' state as before it), so its train stages, which learned everything
        before, take every event once. Empty (the definition starts as new) unless the old
        stage failed. A stage of a source actor and operator actors goes back to its last
        checkpoint instead, with its train stages (``_rolled_back``). The operators' state
        goes along only to a chain of the same kinds of operators, read by as many actors."""
        if not old.readers or not self.failed_now(old):
            return {}
        if old.source is not None:
            return self._rolled_back(old, spec)
        try:
            olds = ray.get([a.get_state.remote() for a in old.readers], timeout=INFO_TIMEOUT)
        except Exception:
            return {}
        reading = spec.reading_slots()
        same = (spec.fused and len(olds) == len(reading)
                and [type(op) for op in old.spec.operators] == [type(op) for op in spec.operators])
        if same:
            return dict(zip(reading, olds, strict=True))
        position = functools.reduce(later, [st["offset"] for st in olds], None)
        return {slot: {"offset": position or 0} for slot in reading}

    def failed_now(self, rec: StageRecord) -> bool:
        """Whether an actor of ``rec`` is failed, asked of the actors themselves: an actor
        marks itself failed before its report reaches the controller (or a controller that
        restarted since never got it), and a user who saw "failed" in ``fk.status()`` may
        define the stage again at once. What the actors say is recorded with the
        checkpoint coordinator, as their report would have been."""
        if rec.name in self.checkpoints.failed_stages():
            return True
        try:
            reports = ray.get([a.info.remote() for a in rec.all_actors], timeout=INFO_TIMEOUT)
        except Exception:
            return False  # unreachable: nothing it still holds is taken up
        failed = False
        for actor, report in zip(rec.all_actors, reports, strict=True):
            if report.status == "failed":
                self.checkpoints.stage_failed(rec.name, report.error or "failed",
                                              actor._actor_id.hex())
                failed = True
        return failed

    def _rolled_back(self, old: StageRecord, spec: StreamSpec) -> dict[str, Any]:
        """A failed stage of a source actor and operator actors, defined again: its source
        actor handed batches on to an operator actor that dropped them once failed, so the
        reader's position is past events nobody processed. The pipeline goes back to its last
        checkpoint (none completes while a stage of it is failed): its train stages are
        restored to it here, in a new epoch (what the old actors still send is dropped), and
        the returned states start the new definition where the checkpoint left the source, so
        every event after it is read again and learned once. Without a checkpoint, both start
        from the beginning. A stage that is an input of a join takes its whole pipeline back:
        the join, its train stages and the join's other input, which reads again from the
        checkpoint too."""
        others = [r for r in self.stages.group_of(old.name) if r.name != old.name]
        k, states = self.checkpoints.usable([old, *others])
        epoch = self.checkpoints.new_epoch()
        self._restore(others, states, epoch)
        self._read_again(others)
        self.monitor.event.remote(Event(
            old.name, "rolled back",
            f"defined again after a failure: back to "
            f"{f'checkpoint {k}' if k is not None else 'the start'} with "
            f"{', '.join(r.name for r in others) or 'no train stage'}"))
        olds = {slot: states.get((old.name, slot)) for slot in old.spec.slots()}
        same = (old.spec.slots() == spec.slots()
                and [type(op) for op in old.spec.operators] == [type(op) for op in spec.operators])
        if same:
            return {slot: st for slot, st in olds.items() if st is not None}
        read = [olds.get(slot) or {} for slot in old.spec.reading_slots()]
        position = functools.reduce(later, [st.get("offset") for st in read], None)
        return {slot: {"offset": position or 0} for slot in spec.reading_slots()}

    # -- after a controller restart ------------------------------------------------------------
    def after_restart(self, lost: list[str], t0: float) -> None:
        """Check the adopted actors; start a pipeline that lost one again from its checkpoint."""
        with self.lock:
            broken = {self.stages.stream_of(self.stages.get(n)) for n in lost} - {None}
            # one question to every adopted actor: one that does not answer is lost (its
            # pipeline starts again); one that Ray restarted while the controller was down
            # (or before the controller that was told rolled it back) waits for that rollback
            waiting = set()
            for rec in list(self.stages.values()):
                stream = self.stages.stream_of(rec)
                if stream is None or stream in broken:
                    continue
                try:
                    asked = [a.needs_rollback.remote() for a in rec.all_actors]
                    if any(ray.get(asked, timeout=ADOPT_TIMEOUT)):
                        waiting.add(stream)
                except Exception:
                    broken.add(stream)
            for rec in list(self.stages.values()):  # failed before the restart: its report
                if rec.kind != "serve" and self.stages.stream_of(rec) not in broken:
                    self.failed_now(rec)  # went to the controller that is gone
            for stream in sorted(broken):
                try:
                    self._relaunch(stream)
                except Exception as exc:
                    log.warning("fusionkit: stream %r could not be started again: %s", stream, exc)
            done = now()
            last = self.checkpoints.last
            k = last[0] if last else None
            self.recoveries.append(records.Recovery("(controller)", k if broken else None,
                                                    t0, done))
            self.monitor.event.remote(Event("(controller)", "recovered", time=done,
                                            detail=f"controller restarted; "
                                                   f"{len(self.stages)} stages adopted, "
                                                   f"{len(broken)} pipelines restarted"))
            self.persist()
        for stream in sorted(waiting - broken):  # the lock is let go between tries
            self.recover(stream, t0)

    def _relaunch(self, stream: str) -> None:
        """Start a stream's pipeline (its joins, train stages and the streams they join) on
        fresh hosts from their last checkpoint."""
        group = self.stages.group_of(stream)  # with the joins and the other streams
        k, states = self.checkpoints.usable(group)
        for member in group:
            if member.all_actors:
                teardown(member)
        self.launch([entry(r, self.pool) for r in group], states)
        for member in group:
            self.stages[member.name].extra["restarts"] = member.extra.get("restarts", 0) + 1
