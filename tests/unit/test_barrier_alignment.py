"""Checkpoint barriers from several senders, requested back to back and taken in any order.

Two checkpoints asked for a few ms apart reach a stage's readers in either order (two
callers, and Ray does not order calls to a threaded actor), so one reader may send the
barrier of checkpoint 2 before (or instead of) that of checkpoint 1 while another sends
1 then 2. The receiver must then complete checkpoint 2 at once, not hold each reader's
barrier waiting for the other's until the timeouts. Each push runs on its own thread, as
Ray runs a threaded actor's calls; the timeouts are an hour, so only the mechanism itself
can let these tests pass.
"""

from __future__ import annotations

import threading
import time

from fusionkit.runtime.channel import CheckpointRequests, Inbox

HOUR = 3600.0


class Receiver:
    """An inbox of ``expected`` senders whose pushes each run on a thread of their own."""

    def __init__(self, expected: int = 2, gap_timeout: float = HOUR):
        self.inbox = Inbox(gap_timeout=gap_timeout, align_timeout=HOUR)
        self.expected = expected
        self.log: list = []
        self.returned: dict[tuple[str, int], object] = {}
        self.threads: list[threading.Thread] = []

    def barrier(self, sender: str, seq: int, k: int) -> threading.Thread:
        def run() -> None:
            ok = self.inbox.barrier(sender, seq, k, self.expected,
                                    lambda: self.log.append(("snapshot", k)))
            self.returned[(sender, seq)] = ok

        return self._start(run)

    def data(self, sender: str, seq: int) -> threading.Thread:
        def run() -> None:
            with self.inbox.admit(sender, seq):
                self.log.append(("batch", f"{sender}{seq}"))
            self.returned[(sender, seq)] = True

        return self._start(run)

    def _start(self, run) -> threading.Thread:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def wait_aligning(self, k: int, senders: int = 1) -> None:
        """Until checkpoint ``k``'s barrier has come from ``senders`` senders."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.inbox._cond:
                align = self.inbox._aligning.get(k)
                if align is not None and len(align.senders) >= senders:
                    return
            time.sleep(0.002)
        raise AssertionError(f"checkpoint {k}'s barrier never arrived")

    def join(self, timeout: float = 30.0) -> None:
        """Every push has returned (the deadline is far beyond what the logic needs)."""
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self.threads if t.is_alive()]
        assert not stuck, f"{len(stuck)} pushes still held; processed so far: {self.log}"


def test_a_reader_that_skipped_the_earlier_checkpoint_does_not_hold_up_the_later():
    r = Receiver()
    r.barrier("b", 0, 1)  # reader b took checkpoint 1, then 2
    r.wait_aligning(1)
    r.barrier("b", 1, 2)
    r.barrier("a", 0, 2)  # reader a saw 2 first: 1 can never align here
    r.data("a", 1)
    r.data("b", 2)
    r.join()
    assert ("snapshot", 1) not in r.log
    assert r.log.count(("snapshot", 2)) == 1
    assert r.returned[("b", 0)] is False and r.returned[("a", 0)] is not False


def test_barriers_sent_in_opposite_orders_complete_the_later_checkpoint():
    r = Receiver()
    r.barrier("a", 0, 2)  # reader a: 2 then 1
    r.wait_aligning(2)
    r.barrier("b", 0, 1)  # reader b: 1 then 2
    r.barrier("a", 1, 1)
    r.barrier("b", 1, 2)
    r.data("a", 2)
    r.data("b", 2)
    r.join()
    assert [e for e in r.log if e[0] == "snapshot"] == [("snapshot", 2)]
    assert r.returned[("a", 1)] is False  # passed over: checkpoint 2 covers it


def test_the_earlier_of_two_barriers_from_every_sender_aligns_first():
    r = Receiver()
    for sender in ("a", "b"):
        r.barrier(sender, 0, 1)
        r.barrier(sender, 1, 2)
        r.data(sender, 2)
    r.join()
    snapshots = [e for e in r.log if e[0] == "snapshot"]
    assert snapshots == [("snapshot", 1), ("snapshot", 2)]
    assert r.log.index(("snapshot", 2)) < min(r.log.index(("batch", s)) for s in ("a2", "b2"))


def test_a_late_barrier_of_an_abandoned_checkpoint_takes_no_snapshot():
    """Checkpoint 1 was abandoned at this receiver (a sender went on to 2): a barrier of 1
    coming later from the other sender must not snapshot state that already holds that
    sender's batches after its barrier."""
    r = Receiver()
    r.barrier("a", 0, 2)
    r.wait_aligning(2)
    r.barrier("b", 0, 1).join(10)
    assert r.returned.get(("b", 0)) is False and ("snapshot", 1) not in r.log
    r.barrier("b", 1, 2)
    r.join()
    assert r.log == [("snapshot", 2)]


def test_a_sender_held_by_its_barrier_is_not_a_gap():
    """A batch behind a barrier that waits for the other senders' is not a missing sequence
    number: it waits for the alignment, however long, instead of going past the barrier
    after the gap timeout (the snapshot would then hold it while the sender's checkpointed
    position is before it: learned twice after a recovery)."""
    r = Receiver(gap_timeout=0.02)
    r.barrier("a", 0, 1)
    r.wait_aligning(1)
    behind = r.data("a", 1)
    behind.join(1.0)  # fifty gap timeouts
    assert behind.is_alive() and r.log == []
    r.barrier("b", 0, 1)
    r.join()
    assert r.log == [("snapshot", 1), ("batch", "a1")]


def test_checkpoint_requests_are_taken_in_order_and_never_go_back():
    due = CheckpointRequests()
    due.add(5)
    due.add(4)  # came second, asked first
    assert due.take() == [4, 5]
    assert due.take() == []
    due.add(3)  # older than one already taken: that checkpoint cannot complete any more
    due.add(7)
    due.add(6)
    assert due.take() == [6, 7]
    due.add(7)  # asked again: taken once
    assert due.take() == []


def test_a_barrier_never_goes_past_a_batch_that_did_not_come():
    """The sender's batch 0 went with a process that died; its barrier (1) came. A push
    goes on after the gap timeout, but the barrier must not snapshot without batch 0 (the
    sender's checkpointed position is past it): after the align timeout the checkpoint is
    abandoned and refused, and the sender's later pushes go on."""
    inbox = Inbox(gap_timeout=0.01, align_timeout=0.2)
    snapshots, refused = [], []
    ok = inbox.barrier("a", 1, 5, 1, lambda: snapshots.append(5), refuse=refused.append)
    assert ok is False
    assert snapshots == []
    assert len(refused) == 1 and "checkpoint 5" in refused[0]
    assert inbox.barrier("b", 0, 5, 1, lambda: snapshots.append(5)) is False  # abandoned
    with inbox.admit("a", 2):
        pass
    assert snapshots == []
