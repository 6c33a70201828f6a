"""Nothing lost after a failure, on a real local Ray (and a real redis-server).

A stream function that raises on one batch leaves the broker's entries and the last
checkpoint as they were, and the fixed stage defined again learns every event exactly
once; a restarted registry keeps its publish guard; a storage folder that cannot be
written to stops publishing, not learning; a model that diverges is not published.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import wait_for

from fusionkit.training.learners import Prediction


# -- helpers --------------------------------------------------------------------------------
def info(fk, name: str) -> dict:
    return fk.api.call("infos", name)[0]


def seen(fk, name: str) -> int:
    return int(info(fk, name).get("events_seen", 0))


def registry():
    import fusionkit as fk

    return fk.api.handles()["registry"]


class EventCounter:
    """A learner that counts how often it learned each event number ``i`` (its state)."""

    task = "classification"

    def __init__(self, n: int):
        self.counts = np.zeros(n, dtype="int64")

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        np.add.at(self.counts, X["i"].to_numpy(dtype="int64"), 1)

    def get_state(self) -> bytes:
        return pickle.dumps(self.counts)

    def set_state(self, state: bytes) -> None:
        self.counts = pickle.loads(state)


def learned_counts(fk, name: str) -> np.ndarray:
    version = fk.publish(name)
    return pickle.loads(ray.get(registry().state.remote(name, version)))


# -- a stream function that raises on one batch, through Redis --------------------------------
POISON = 4321  # the event the first definition's function cannot handle


def breaks_on_poison(df: pd.DataFrame) -> pd.DataFrame:
    if (df["i"] == POISON).any():
        raise ValueError(f"cannot handle event {POISON}")
    return df.assign(x2=df["x"] * 2)


def fixed(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(x2=df["x"] * 2)


def produce(client, start: int, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd("events", {"data": json.dumps({"i": i, "x": float(i % 7), "y": i % 2})})
    pipe.execute()


@pytest.fixture()
def server(tmp_path):
    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    from test_redis_source import RedisServer

    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.mark.redis
def test_failed_stream_function_keeps_its_events_and_learns_each_once(fk, server):
    n = 6000
    client = server.client()
    produce(client, 0, n // 2)
    schema = fk.Schema({"i": "integer", "x": "number", "y": "integer"})
    src = fk.sources.redis(server.url, stream="events", schema=schema)
    fk.stream("events", source=src, fn=breaks_on_poison, batch_size=200, paused=True)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    fk.resume("events")
    wait_for(lambda: seen(fk, "count") >= n // 2, timeout=90, what="the first half learned")
    assert fk.checkpoint() is not None  # a sound pipeline checkpoints
    produce(client, n // 2, n // 2)
    wait_for(lambda: fk.status().loc["events", "status"] == "failed", timeout=90,
             what="the stream stage to fail on the poison event")
    assert f"cannot handle event {POISON}" in fk.status().loc["events", "error"]
    # no checkpoint of the failed pipeline completes, so nothing it has not processed is
    # acknowledged to Redis: the poison event's entry is still pending in the group
    assert fk.checkpoint(timeout=10) is None
    poison_id = next(eid for eid, f in client.xrange("events")
                     if json.loads(f[b"data"])["i"] == POISON)
    pending = {r["message_id"] for r in client.xpending_range("events", "fusionkit", "-", "+",
                                                              n)}
    assert poison_id in pending
    # the user fixes the function and defines the stage again: it takes up where the
    # failed one stopped, and every event is learned once
    fk.stream("events", source=src, fn=fixed, batch_size=200)
    wait_for(lambda: seen(fk, "count") >= n, timeout=90, what="every event learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert fk.status().loc["events", "status"] == "running"
    assert fk.checkpoint() is not None  # checkpoints again, and acknowledge everything
    wait_for(lambda: client.xpending("events", "fusionkit")["pending"] == 0, timeout=30,
             what="every entry acknowledged")
