"""Bounded, ordered hand-off of batches between actors.

A sender (``Outbox``) never has more than ``max_inflight`` batches outstanding at any one
receiver: when the limit is reached it waits for the oldest to be processed, so a slow
receiver slows its senders all the way back to the source instead of filling memory.

Ray does not promise that calls from one caller to a threaded actor run in order, so each
push carries ``(sender, seq)`` and the receiver (``Inbox``) admits them strictly in
sequence per sender. A sender that dies leaves a gap; after ``gap_timeout`` seconds the
receiver stops waiting for it.

Checkpoint barriers travel in the same sequence. Each sender sends them in increasing
checkpoint order but may skip one: two checkpoints requested back to back reach a stage's
readers in either order, and a reader that took the later one first drops the earlier
(``CheckpointRequests``). So a barrier of checkpoint ``k`` from one sender ends every
earlier checkpoint still aligning at its receiver: that one can no longer come from every
sender, and is abandoned (as Flink's barrier aligner does), instead of holding each
reader's barrier waiting for the other's until the timeouts, with no checkpoint completing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from contextlib import contextmanager
from typing import Any

import ray

log = logging.getLogger("fusionkit")


class Outbox:
    """Sends batches to the actors of downstream stages, at most ``max_inflight`` each."""

    def __init__(self, sender: str, max_inflight: int = 4, epoch: int = 0):
        self.name = sender
        self.sender = f"{sender}/{uuid.uuid4().hex[:8]}"
        self.max_inflight = max_inflight
        self.epoch = epoch
        self._targets: dict[str, list[Any]] = {}
        self._seq: dict[str, int] = {}
        self._inflight: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._abandon = threading.Event()
        self.dropped = 0

    def set_targets(self, targets: dict[str, list[Any]]) -> None:
        """Replace the downstream map: ``{stage name: [actor handles]}``."""
        with self._lock:
            self._targets = {k: list(v) for k, v in targets.items()}
            live = {self._key(h) for hs in self._targets.values() for h in hs}
            for key in list(self._inflight):
                if key not in live:
                    self._inflight.pop(key, None)
                    self._seq.pop(key, None)

    @property
    def has_targets(self) -> bool:
        return any(self._targets.values())

    def target_count(self, stage: str) -> int:
        return len(self._targets.get(stage, ()))

    @staticmethod
    def _key(handle: Any) -> str:
        return handle._actor_id.hex()

    def _push(self, handle: Any, payload: Any) -> None:
        key = self._key(handle)
        q = self._inflight.setdefault(key, deque())
        while len(q) >= self.max_inflight:
            self._settle(q.popleft())
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        q.append(handle.push.remote(self.sender, seq, payload, self.epoch))

    def _settle(self, ref: Any) -> None:
        try:
            while True:
                try:
                    ray.get(ref, timeout=0.25)
                    return
                except ray.exceptions.GetTimeoutError:
                    if self._abandon.is_set():  # a recovery started over: the source replays it
                        self.dropped += 1
                        return
        except ray.exceptions.RayActorError:
            self.dropped += 1  # the receiver died or was replaced; its replacement replays
        except ray.exceptions.RayTaskError as err:  # receiver-side failure: it reports itself
            log.debug("push failed at receiver: %s", err)

    def send(self, batch: Any, parts: dict[str, list[Any]] | None = None) -> None:
        """Send ``batch`` to every target stage.

        A stage with one actor gets the whole batch (put once in the object store and
        shared). ``parts`` may give, per stage, one sub-batch per actor (key partitioning).
        """
        with self._lock:
            fan_out = sum(len(h) for s, h in self._targets.items() if not (parts and s in parts))
            shared = ray.put(batch) if fan_out > 1 else batch
            for stage, handles in self._targets.items():
                if parts and stage in parts:
                    for handle, part in zip(handles, parts[stage], strict=True):
                        if part is not None and len(part):
                            self._push(handle, part)
                    continue
                for handle in handles:
                    self._push(handle, shared)

    def broadcast(self, payload: Any) -> None:
        """Send the same small object (a checkpoint barrier) to every target actor, in order."""
        with self._lock:
            for handles in self._targets.values():
                for handle in handles:
                    self._push(handle, payload)

    def abandon(self) -> None:
        """Stop waiting for batches in flight (a recovery is starting over from a checkpoint):
        a sender blocked on a receiver that died, or that Ray is restarting, goes on at once
        instead of waiting for the receiver's replacement to give up on those batches."""
        self._abandon.set()

    def reset(self, epoch: int) -> None:
        """Start over after a recovery: a new sender identity, nothing in flight."""
        with self._lock:
            self.sender = f"{self.name}/{uuid.uuid4().hex[:8]}"
            self.epoch = epoch
            self._seq.clear()
            self._inflight.clear()
            self._abandon.clear()

    def inflight(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._inflight.values())

    def busy(self) -> bool:
        """Whether a send now would wait: some downstream actor still has ``max_inflight``
        batches to process (settles what it has finished, without blocking)."""
        with self._lock:
            for q in self._inflight.values():
                if len(q) < self.max_inflight:
                    continue
                ready, _ = ray.wait(list(q), num_returns=len(q), timeout=0)
                if not ready:
                    return True
                done = set(ready)
                for ref in [r for r in q if r in done]:
                    q.remove(ref)
                    self._settle(ref)
                if len(q) >= self.max_inflight:
                    return True
        return False

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every batch sent has been processed. With ``timeout``, wait at most
        that long (a receiver paused by the user takes nothing): False if some were not."""
        if timeout is not None:
            with self._lock:
                refs = [r for q in self._inflight.values() for r in q]
            if refs:
                _, rest = ray.wait(refs, num_returns=len(refs), timeout=timeout)
                if rest:
                    return False
        with self._lock:
            for q in self._inflight.values():
                while q:
                    self._settle(q.popleft())
        return True


class Inbox:
    """Admits pushes in per-sender sequence order, one batch at a time.

    A push may park its batch while it waits (``admit(..., batch)``): the push holding the
    processing slot can then take over the batches of the same sender's next pushes
    (``take_over``) and process them with its own, as one. Under load a receiver thus takes
    what has queued up in one step instead of one step per batch; a push whose batch was
    taken over returns once the push that took it is done.
    """

    def __init__(self, gap_timeout: float = 10.0, align_timeout: float = 60.0):
        self.gap_timeout = gap_timeout
        self.align_timeout = align_timeout
        self._cond = threading.Condition()
        self._next: dict[str, int] = {}
        self._busy = False
        self._aligning: dict[int, _Alignment] = {}  # checkpoint id -> its barriers so far
        self._passed = -1  # every checkpoint up to this id has aligned or was abandoned here
        self._parked: dict[tuple[str, int], Any] = {}  # (sender, seq) -> batch, while waiting
        self._holding: list[tuple[str, int]] = []      # taken over by the slot's holder
        self._done: set[tuple[str, int]] = set()       # taken over and processed
        self.waiting = 0

    @contextmanager
    def admit(self, sender: str, seq: int, batch: Any = None):
        """Block until it is this push's turn, then hold the processing slot: yields True.
        With ``batch``, the batch is parked meanwhile; if another push took it over, this
        yields False (without the slot) once that push is done with it."""
        key = (sender, seq)
        with self._cond:
            self.waiting += 1
            if batch is not None:
                self._parked[key] = batch
            expected = self._next.setdefault(sender, 0)  # senders start at 0

            def turn() -> bool:
                return key not in self._holding and self._next[sender] >= seq and not self._busy

            ok = self._wait_turn(sender, lambda: key in self._done or turn())
            if not ok:
                log.warning("fusionkit: gap from %s (expected %s, got %s)", sender, expected, seq)
                self._cond.wait_for(lambda: key in self._done
                                    or (key not in self._holding and not self._busy))
            self.waiting -= 1
            taken = key in self._done
            if taken:
                self._done.discard(key)
            else:
                self._parked.pop(key, None)
                self._busy = True
        if taken:
            yield False
            return
        try:
            yield True
        finally:
            with self._cond:
                self._busy = False
                self._next[sender] = max(self._next[sender], seq + 1)
                self._done.update(self._holding)
                self._holding = []
                self._cond.notify_all()

    def take_over(self, sender: str, seq: int, limit: int) -> list[Any]:
        """For the push ``(sender, seq)`` holding the slot: the batches parked by the same
        sender's next pushes (``seq + 1``, ``seq + 2``, ... as long as each is parked), at
        most ``limit``. A barrier is never parked, so nothing is taken across one."""
        out = []
        with self._cond:
            k = seq + 1
            while len(out) < limit and (sender, k) in self._parked:
                out.append(self._parked.pop((sender, k)))
                self._holding.append((sender, k))
                k += 1
            if out:
                self._next[sender] = max(self._next[sender], k)
        return out

    @contextmanager
    def exclusive(self):
        """Hold the processing slot outside of a push (e.g. a timer that publishes)."""
        with self._cond:
            self._cond.wait_for(lambda: not self._busy)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _wait_turn(self, sender: str, ready) -> bool:
        """Wait (holding the condition) until ``ready()``; False after ``gap_timeout`` with
        nothing from ``sender``. A sender whose barrier is still aligning is held, not gone:
        its next push waits for the alignment to end (aligned, or abandoned after
        ``align_timeout``), since going past the barrier would put the batch into the
        snapshot while the sender's checkpointed position is before it."""
        while True:
            if self._cond.wait_for(ready, timeout=self.gap_timeout):
                return True
            if not any(sender in a.senders for a in self._aligning.values()):
                return False

    def _abandon(self, k: int) -> None:
        """Give up checkpoint ``k`` here (holding the condition): its waiting senders go on
        and a barrier of it arriving later takes no snapshot."""
        align = self._aligning.pop(k, None)
        if align is not None:
            align.outcome = False
        self._passed = max(self._passed, k)
        self._cond.notify_all()

    def barrier(self, sender: str, seq: int, key: int, expected: int, action,
                refuse=None) -> bool:
        """A barrier of checkpoint ``key`` from ``sender``: once it has come from ``expected``
        senders, run ``action`` (holding the processing slot). Until then this sender's later
        pushes wait, so the state ``action`` captures reflects exactly what came before the
        barrier on every channel. Checkpoints before ``key`` that are still aligning are
        abandoned, and a barrier of one aligned or abandoned already is passed over (see the
        module's docstring). Returns whether the barrier aligned.

        A barrier never goes past a missing batch: a push, unlike a barrier, goes on after
        ``gap_timeout`` without the batches before it, but a snapshot taken then would miss
        them while the sender's checkpointed position is past them. If the sender's earlier
        batches have not all come within ``align_timeout`` (they went with a process that
        died), the checkpoint is abandoned here and ``refuse(reason)`` is called."""
        with self._cond:
            in_turn = self._cond.wait_for(lambda: self._next.setdefault(sender, 0) >= seq
                                          and not self._busy, timeout=self.align_timeout)
            if not in_turn:
                self._abandon(key)
                self._next[sender] = max(self._next[sender], seq + 1)
                last = align = None
            else:
                for k in [k for k in self._aligning if k < key]:
                    self._abandon(k)  # this sender has gone past them
                if key <= self._passed:
                    self._next[sender] = max(self._next[sender], seq + 1)
                    self._cond.notify_all()
                    return False
                self._passed = max(self._passed, key - 1)  # ones this sender skipped, unseen
                align = self._aligning.setdefault(key, _Alignment())
                align.senders.add(sender)
                last = len(align.senders) >= expected
                if last:
                    del self._aligning[key]
                    self._passed = key
                    self._cond.wait_for(lambda: not self._busy)
                    self._busy = True
        if align is None:
            if refuse is not None:
                refuse(f"a batch sent before the barrier of checkpoint {key} never came")
            return False
        if last:
            try:
                action()
            finally:
                with self._cond:
                    self._busy = False
                    align.outcome = True
                    self._next[sender] = max(self._next[sender], seq + 1)
                    self._cond.notify_all()
            return True
        with self._cond:
            if not self._cond.wait_for(lambda: align.outcome is not None,
                                       timeout=self.align_timeout):
                self._abandon(key)  # a barrier of it arriving later must not snapshot
            self._next[sender] = max(self._next[sender], seq + 1)
            self._cond.notify_all()
        return bool(align.outcome)


class _Alignment:
    """One checkpoint's barriers at a receiver: the senders they came from, and how the
    alignment ended (None while it waits)."""

    __slots__ = ("senders", "outcome")

    def __init__(self) -> None:
        self.senders: set[str] = set()
        self.outcome: bool | None = None


class CheckpointRequests:
    """The checkpoints asked of a reading actor, taken in increasing order, each once.

    Requests for checkpoints ``k`` and ``k + 1`` may arrive in either order (two callers,
    and Ray does not order calls to a threaded actor). Barriers must leave a reader in
    increasing order, since a receiver takes a barrier of ``k + 1`` as the end of ``k``
    (``Inbox.barrier``): a request older than the last one taken is dropped, as that
    checkpoint can no longer complete and the later one covers it. Not thread-safe: the
    reader holds its own lock around it.

    Examples
    --------
    >>> due = CheckpointRequests()
    >>> due.add(8); due.add(7)
    >>> due.take()
    [7, 8]
    >>> due.add(6); due.take()
    []
    """

    def __init__(self) -> None:
        self._due: set[int] = set()
        self.last = -1  # the last checkpoint taken

    def add(self, k: int) -> None:
        if k > self.last:
            self._due.add(k)

    def take(self) -> list[int]:
        """The checkpoints due, oldest first; they are taken."""
        out = sorted(self._due)
        self._due.clear()
        if out:
            self.last = out[-1]
        return out
