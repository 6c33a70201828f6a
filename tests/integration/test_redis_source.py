"""The Redis Streams source and sink against a real redis-server on a free loopback port.

The first tests drive the source directly (no Ray): pending entries, seek, commit, decoding.
The others run whole pipelines on the session's local Ray: exact counts end to end, a
Redis restart mid-run, a stage actor killed mid-run.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
from _pipelines import SCHEMA, EventCounter, events_seen, free_port, learned_counts
from conftest import first_fused, learn_through_a_kill, wait_for

from fusionkit.sources.redis import Redis as RedisSource

redis = pytest.importorskip("redis")
pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def produce(client, stream: str, start: int, n: int, bad_every: int = 0) -> int:
    """XADD events ``i = start..start+n-1`` as JSON; every ``bad_every``-th is malformed in
    one of four ways instead. Returns the number of good events written."""
    kinds = [b"{not json", b"[1, 2]", None, b'{"i": 0, "x": "text", "y": 1}']
    pipe = client.pipeline(transaction=False)
    good = 0
    for i in range(start, start + n):
        if bad_every and i % bad_every == bad_every - 1:
            raw = kinds[(i // bad_every) % len(kinds)]
            pipe.xadd(stream, {"data": raw} if raw is not None else {"payload": b"{}"})
            continue
        pipe.xadd(stream, {"data": json.dumps({"i": i, "x": float(i % 7), "y": i % 2})})
        good += 1
    pipe.execute()
    return good


# -- the source on its own --------------------------------------------------------------------
def test_pending_entries_seek_and_commit(redis_server):
    client = redis_server.client()
    produce(client, "ev", 0, 10)
    src = RedisSource(redis_server.url, stream="ev", group="g")
    src.open()
    first = src.read(6)
    assert first["i"].tolist() == list(range(6))
    assert first["_offset"].is_monotonic_increasing and first["_offset"].dtype == "int64"
    src.close()

    # a restart re-reads this consumer's pending entries first, then new ones
    again = pickle.loads(pickle.dumps(src))
    again.open()
    assert again.read(100)["i"].tolist() == list(range(6))
    assert again.read(100)["i"].tolist() == list(range(6, 10))

    # resuming at a checkpointed offset skips what the checkpoint covers
    again.open()
    again.seek(int(first["_offset"].iloc[3]) + 1)
    assert again.read(100)["i"].tolist() == list(range(4, 10))

    # commit acknowledges exactly the entries below the offset
    acked = again.commit(int(first["_offset"].iloc[3]) + 1)
    assert acked == 4
    pending = client.xpending("ev", "g")
    assert pending["pending"] == 6 and pending["min"] == client.xrange("ev")[4][0]

    # a second consumer in the group gets only entries nobody has read
    produce(client, "ev", 10, 5)
    other = RedisSource(redis_server.url, stream="ev", group="g", consumer="other")
    other.open()
    assert other.read(100)["i"].tolist() == list(range(10, 15))
    assert len(again.read(100)) == 0
    again.close()
    other.close()


def test_undecodable_entries_become_dead_letters(redis_server):
    client = redis_server.client()
    good = produce(client, "ev", 0, 12, bad_every=3)
    client.xadd("ev", {"data": b"\xff\xfe"})
    src = RedisSource(redis_server.url, stream="ev", group="g")
    src.open()
    batch = src.read(100)
    dead = src.take_dead_letters()
    # the wrong-typed "x" is a schema matter: the source passes it on for the stage to judge
    assert len(batch) == good + 1
    reasons = sorted(reason.split(":")[0] for _, reason, _ in dead)
    assert reasons == ["JSON payload is list, not an object", "entry has no 'data' field",
                       "invalid JSON", "payload is not UTF-8 text"]
    assert all(off > 0 for _, _, off in dead)
    assert src.take_dead_letters() == []
    src.close()


def test_unreachable_server_is_a_clear_error():
    url = f"redis://127.0.0.1:{free_port()}/0"
    src = RedisSource(url, stream="ev")
    with pytest.raises(ConnectionError, match=f"cannot reach Redis at {url}"):
        src.open()
    with pytest.raises(ValueError, match="Redis URL"):
        RedisSource("127.0.0.1:6379", stream="ev")


# -- whole pipelines on Ray -------------------------------------------------------------------
def test_stream_to_train_exact_counts_dead_letters_and_sink(fk, redis_server):
    n = 3000
    client = redis_server.client()
    good = produce(client, "events", 0, n, bad_every=50)
    src = fk.sources.redis(redis_server.url, stream="events", group="fusionkit",
                           schema=fk.Schema(SCHEMA))
    # paused: the sink is a consumer, so the stream would read before the train stage exists
    fk.stream("events", source=src, batch_size=500, paused=True,
              operators=[fk.sinks.redis(redis_server.url, stream="out")])
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    fk.resume("events")
    wait_for(lambda: events_seen(fk, "count") >= good, timeout=90, what=f"{good} events learned")
    bad = n - good
    wait_for(lambda: fk.status().loc["events", "dead_letters"] >= bad, timeout=30,
             what="dead letters")
    counts = learned_counts(fk, "count")
    expected = np.ones(n, dtype="int64")
    expected[[i for i in range(n) if i % 50 == 49]] = 0
    assert (counts == expected).all(), f"{(counts > 1).sum()} twice, {(counts < expected).sum()} lost"
    assert fk.status().loc["events", "events"] == good + bad // 4  # wrong type: seen, refused
    letters = fk.dead_letters("events")
    assert len(letters) == bad
    reasons = set(letters["reason"].str.split(":").str[0])
    assert reasons == {"invalid JSON", "JSON payload is list, not an object",
                       "entry has no 'data' field", "wrong type in 'x'"}
    # the sink wrote each good event once, as JSON with its offset
    wait_for(lambda: client.xlen("out") >= good, timeout=30, what="the sink's entries")
    written = [json.loads(f[b"data"]) for _, f in client.xrange("out")]
    assert sorted(r["i"] for r in written) == [i for i in range(n) if i % 50 != 49]
    assert all("_offset" in r and "_ingest_ts" not in r for r in written)
    # a completed checkpoint acknowledges what it covers: nothing stays pending in the group
    assert fk.checkpoint() is not None
    wait_for(lambda: client.xpending("events", "fusionkit")["pending"] == 0, timeout=30,
             what="the checkpointed entries acknowledged (XACK)")


def test_redis_restart_mid_run_loses_nothing(fk, redis_server):
    n = 4000
    client = redis_server.client()
    produce(client, "events", 0, n // 2)
    src = fk.sources.redis(redis_server.url, stream="events", schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=500)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n // 2, timeout=90, what="first half learned")
    redis_server.stop()
    wait_for(lambda: "source retrying" in set(fk.events()["kind"]), timeout=30,
             what="the stage to report it is retrying")
    assert fk.status().loc["events", "status"] == "running"
    redis_server.start()
    client = redis_server.client()
    produce(client, "events", n // 2, n // 2)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what="second half learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    wait_for(lambda: "source recovered" in set(fk.events()["kind"]), timeout=30,
             what="the stage to report the source is back")
    # the gauges travel with the stage's metric reports, apart from the event
    wait_for(lambda: fk.metrics("events")["retrying"].dropna().iloc[-1] == 0, timeout=30,
             what="the retrying gauge to drop back to 0")
    assert fk.metrics("events")["source_errors"].max() >= 1


def test_stage_actor_killed_rereads_pending_entries(fk, redis_server):
    n = 30_000
    client = redis_server.client()
    src = fk.sources.redis(redis_server.url, stream="events", schema=fk.Schema(SCHEMA))
    produce(client, "events", 0, 500)
    fk.stream("events", source=src, batch_size=500)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    learn_through_a_kill(fk, lambda start: produce(client, "events", start, 500),
                         range(500, n, 500), first_fused, lambda: events_seen(fk, "count"), n)
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert fk.status().loc["events", "restarts"] >= 1
