"""The hand-off between stages (``fusionkit.runtime.channel.Outbox``) on a real Ray: batches
sent while the receiver is busy wait at the sender and go together in one push, in order,
each once; a batch never waits while the receiver could take it; a barrier goes after what
waited; at most ``max_inflight`` batches are outstanding; and the local Ray carries a batch
in the call, not through the object store."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
import ray

from fusionkit.runtime.channel import EAGER, Inbox, Outbox, unpack
from tests.conftest import wait_for


class Receiver:
    """A stage actor's receiving end, reduced: pushes admitted in order (as stage actors do,
    since Ray does not order calls to a threaded actor), each batch recorded; it can be held
    busy until released."""

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.pushes: list[int] = []  # batches per push, in admission order
        self.items: list = []        # every batch's first value (or the barrier), in order
        self.open = threading.Event()
        self.open.set()

    def push(self, sender: str, seq: int, payload, epoch: int = 0) -> None:
        with self.inbox.admit(sender, seq):
            self.open.wait()
            batches = unpack(payload)
            self.pushes.append(len(batches))
            for b in batches:
                self.items.append(int(b["x"].iloc[0]) if isinstance(b, pd.DataFrame) else b)

    def hold(self) -> None:
        self.open.clear()

    def release(self) -> None:
        self.open.set()

    def seen(self) -> tuple[list[int], list]:
        return list(self.pushes), list(self.items)


@pytest.fixture()
def receiver(fk):
    actor = ray.remote(Receiver).options(max_concurrency=16).remote()
    yield actor
    ray.kill(actor)


def batch(i: int) -> pd.DataFrame:
    return pd.DataFrame({"x": [i] * 10})


def test_batches_sent_to_a_busy_receiver_go_together_in_order_each_once(receiver):
    ray.get(receiver.hold.remote())
    out = Outbox("s", max_inflight=4)
    out.set_targets({"t": [receiver]})
    n = 200
    produced: list[int] = []

    def produce() -> None:
        for i in range(n):
            produced.append(i)
            out.send(batch(i))

    sent = threading.Thread(target=produce)
    sent.start()
    # held: EAGER pushes are out and the rest of max_inflight waits; the next send waits
    full = out.max_inflight + 1
    wait_for(lambda: len(produced) >= full, what="the hand-off full")
    assert len(produced) == full and sent.is_alive()
    ray.get(receiver.release.remote())
    sent.join(60)
    out.drain()
    pushes, items = ray.get(receiver.seen.remote())
    assert items == list(range(n))
    assert sum(pushes) == n
    assert len(pushes) < n  # went together, not one push per batch
    assert max(pushes) <= out.max_inflight


def test_a_batch_goes_at_once_to_a_free_receiver_and_what_waits_follows_unasked(receiver):
    out = Outbox("s", max_inflight=4)
    out.set_targets({"t": [receiver]})
    out.send(batch(0))
    wait_for(lambda: ray.get(receiver.seen.remote())[1] == [0], what="the first batch")
    ray.get(receiver.hold.remote())
    for i in range(1, 5):
        out.send(batch(i))  # 1 and 2 go (EAGER), 3 and 4 wait at the sender
    assert out.inflight() == EAGER + 2
    ray.get(receiver.release.remote())
    # no further send, no drain: the waiting batches go as soon as the receiver takes one
    wait_for(lambda: ray.get(receiver.seen.remote())[1] == [0, 1, 2, 3, 4],
             what="the waiting batches")
    pushes, _ = ray.get(receiver.seen.remote())
    assert pushes == [1, 1, 1, 2]


def test_a_barrier_goes_after_the_batches_waiting_for_its_receiver(receiver):
    ray.get(receiver.hold.remote())
    out = Outbox("s", max_inflight=8)
    out.set_targets({"t": [receiver]})
    for i in range(5):
        out.send(batch(i))
    out.broadcast("barrier")
    ray.get(receiver.release.remote())
    out.drain()
    assert ray.get(receiver.seen.remote())[1] == [0, 1, 2, 3, 4, "barrier"]


def test_a_batch_shared_by_two_receivers_is_fetched_from_a_push_of_several(fk):
    a, b = (ray.remote(Receiver).options(max_concurrency=16).remote() for _ in range(2))
    try:
        ray.get([a.hold.remote(), b.hold.remote()])
        out = Outbox("s", max_inflight=4)
        out.set_targets({"t": [a, b]})
        for i in range(4):  # 2 go, 2 wait (a 5th would wait for the receivers)
            out.send(batch(i))  # put once in the object store, a reference to each
        ray.get([a.release.remote(), b.release.remote()])
        out.drain()
        for r in (a, b):
            pushes, items = ray.get(r.seen.remote())
            assert items == list(range(4))
            assert max(pushes) > 1
    finally:
        ray.kill(a)
        ray.kill(b)


def test_the_local_ray_carries_a_batch_in_the_call(fk):
    """A 20,000-row batch (~0.3 MB) travels inline: no node holds it in its object store
    (with Ray's default, anything over 100 KiB goes there)."""

    @ray.remote
    def make(n: int) -> pd.DataFrame:
        return pd.DataFrame({"x": range(n), "y": [0.5] * n})

    ref = make.remote(20_000)
    ray.get(ref)
    where = ray.experimental.get_object_locations([ref])[ref]
    assert where["object_size"] > 100 * 1024
    assert where["node_ids"] == []
