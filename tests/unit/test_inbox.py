"""The receiving end of a channel: per-sender order, and taking over queued batches."""

from __future__ import annotations

import threading
import time

from fusionkit.runtime.channel import Inbox


def _push(inbox: Inbox, sender: str, seq: int, log: list, hold: threading.Event | None = None,
          take: int = 0) -> threading.Thread:
    """A push as a receiver runs it: admitted in turn, it records what it processed."""

    def run() -> None:
        with inbox.admit(sender, seq, f"{sender}{seq}") as mine:
            if not mine:
                log.append(("taken", seq))
                return
            if hold is not None:
                hold.wait(10)
            more = inbox.take_over(sender, seq, take) if take else []
            log.append(("processed", [f"{sender}{seq}", *more]))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_busy(inbox: Inbox) -> None:
    """Until a push holds the processing slot."""
    deadline = time.monotonic() + 10
    while not inbox._busy and time.monotonic() < deadline:
        time.sleep(0.005)
    assert inbox._busy


def _wait_parked(inbox: Inbox, n: int) -> None:
    deadline = time.monotonic() + 10
    while inbox.waiting < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert inbox.waiting >= n


def test_pushes_are_admitted_in_sequence_order():
    inbox, log = Inbox(), []
    threads = [_push(inbox, "a", seq, log) for seq in (2, 0, 1)]
    for t in threads:
        t.join(10)
    assert log == [("processed", ["a0"]), ("processed", ["a1"]), ("processed", ["a2"])]


def test_the_admitted_push_takes_over_what_queued_behind_it():
    inbox, log, hold = Inbox(), [], threading.Event()
    first = _push(inbox, "a", 0, log, hold, take=8)
    _wait_busy(inbox)
    queued = [_push(inbox, "a", seq, log) for seq in (1, 2, 3)]
    _wait_parked(inbox, 3)
    hold.set()
    for t in [first, *queued]:
        t.join(10)
    assert log[0] == ("processed", ["a0", "a1", "a2", "a3"])
    assert sorted(log[1:]) == [("taken", 1), ("taken", 2), ("taken", 3)]
    after: list = []
    _push(inbox, "a", 4, after).join(10)  # the sequence goes on after the taken ones
    assert after == [("processed", ["a4"])]


def test_taken_over_pushes_return_only_once_the_batch_is_processed():
    inbox, log, hold = Inbox(), [], threading.Event()
    first = _push(inbox, "a", 0, log, hold, take=8)
    _wait_busy(inbox)
    queued = _push(inbox, "a", 1, log)
    _wait_parked(inbox, 1)
    time.sleep(0.1)
    assert log == [] and queued.is_alive()  # a0 (with a1) still being processed
    hold.set()
    for t in (first, queued):
        t.join(10)
    assert log == [("processed", ["a0", "a1"]), ("taken", 1)]


def test_nothing_is_taken_across_a_gap_or_from_another_sender():
    """A missing sequence number (e.g. a barrier, which is never parked) ends the run."""
    inbox, log, hold = Inbox(), [], threading.Event()
    first = _push(inbox, "a", 0, log, hold, take=8)
    _wait_busy(inbox)
    later = [_push(inbox, "a", 2, log), _push(inbox, "b", 0, log)]
    _wait_parked(inbox, 2)
    hold.set()
    first.join(10)
    assert log[0] == ("processed", ["a0"])
    inbox.barrier("a", 1, key=1, expected=1, action=lambda: log.append(("barrier", 1)))
    for t in later:
        t.join(10)
    assert ("barrier", 1) in log and ("processed", ["a2"]) in log and ("processed", ["b0"]) in log
    assert log.index(("barrier", 1)) < log.index(("processed", ["a2"]))
