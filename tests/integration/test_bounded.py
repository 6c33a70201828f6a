"""Bounded memory and kept dead letters, on the session's real local Ray.

Dead letters are part of a stage actor's checkpointed state: their offsets are committed to
the broker with the checkpoint, so after a SIGKILL and a recovery they must come back from
it (a real redis-server). A keyed window and keyed state with a ttl hold a bounded number of
keys while 200,000 distinct keys pass (read from the actors' infos, not from memory use).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _pipelines import SCHEMA, EventCounter, events_seen, learned_counts
from conftest import first_fused, learn_through_a_kill, wait_for
from test_redis_source import produce


@pytest.mark.redis
def test_dead_letters_survive_a_killed_stream_actor(fk, redis_server):
    """Malformed entries mixed into a Redis stream: the stream actor is SIGKILLed after a
    checkpoint acknowledged (XACK) the first ones; after the recovery every malformed entry
    is a dead letter exactly once, and every good event is learned exactly once."""
    n, every = 20_000, 100
    bad = n // every
    client = redis_server.client()
    src = fk.sources.redis(redis_server.url, stream="events",
                           schema=fk.Schema(SCHEMA))
    produce(client, "events", 0, 500, bad_every=every)
    fk.stream("events", source=src, batch_size=500)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    learn_through_a_kill(fk, lambda start: produce(client, "events", start, 500, bad_every=every),
                         range(500, n, 500), first_fused, lambda: events_seen(fk, "count"),
                         n - bad)
    try:
        wait_for(lambda: len(fk.dead_letters("events")) >= bad, timeout=60,
                 what=f"{bad} dead letters after the recovery")
    finally:
        print("DEAD", len(fk.dead_letters("events")), "of", bad)
    letters = fk.dead_letters("events")
    assert len(letters) == bad and letters["offset"].is_unique, "each malformed entry once"
    assert fk.status().loc["events", "dead_letters"] == bad
    assert fk.status().loc["events", "restarts"] >= 1
    counts = learned_counts(fk, "count")
    good = np.ones(n, dtype="int64")
    good[every - 1::every] = 0
    assert (counts == good).all(), f"{(counts < good).sum()} lost, {(counts > good).sum()} twice"



@pytest.mark.redis
def test_dead_letters_kept_when_a_stage_is_scaled(fk, redis_server):
    """A stream stage scaled from one actor to a source actor and two operator actors keeps
    the dead letters its old actor held, and files the new ones beside them, each once."""
    n, every = 4_000, 100
    client = redis_server.client()
    src = fk.sources.redis(redis_server.url, stream="scaled", schema=fk.Schema(SCHEMA))
    produce(client, "scaled", 0, n // 2, bad_every=every)
    fk.stream("scaled", source=src, batch_size=500)
    fk.train("count", on="scaled", label="y", model=EventCounter(n), publish_every=None)
    wait_for(lambda: len(fk.dead_letters("scaled")) >= n // 2 // every, timeout=60,
             what="the first dead letters")
    fk.scale("scaled", 2)
    assert fk.status().loc["scaled", "parallelism"] == 2
    produce(client, "scaled", n // 2, n // 2, bad_every=every)
    wait_for(lambda: len(fk.dead_letters("scaled")) >= n // every, timeout=60,
             what="the dead letters from before and after the scaling")
    letters = fk.dead_letters("scaled")
    assert len(letters) == n // every and letters["offset"].is_unique, "each malformed entry once"
    assert fk.status().loc["scaled", "dead_letters"] == n // every

def test_200k_distinct_keys_keep_the_keys_held_bounded(fk):
    """200,000 users, each seen once, through a keyed 100 ms window: the keys the stream
    actor holds stay in the thousands, not 200,000 (keyed state with a ttl holds the keys of
    its last ttl: tests/unit/test_bounded_state.py, as its user function runs per key)."""
    n = 200_000
    users = pd.DataFrame({"user": [f"u{i}" for i in range(n)], "v": np.arange(n) % 5})
    src = fk.sources.replay(users, start_time=0.0)  # 10,000 events per second of event time
    fk.stream("users", source=src, batch_size=1000, paused=True,
              window=fk.tumbling("100ms", agg={"clicks": ("v", "count")}, key="user"))
    held = []

    def done() -> bool:
        info = fk.infos("users")[0]
        held.append(info.get("held_keys"))
        assert info["status"] != "failed", info["error"]
        return info["status"] == "finished"

    fk.resume("users")
    wait_for(done, timeout=300, interval=0.2, what="200,000 keys through the stream")
    assert None not in held, "the actor reports the keys it holds"
    # 2 x the ~1,000 keys of its open windows + a batch of new ones, or the 1,024 floor
    assert max(held) <= 4000, f"held up to {max(held)} keys"
    info = fk.infos("users")[0]
    # every window fired in stream but the last, which the end of the stream flushes
    assert info["totals"]["events_out"] >= n - 1000
