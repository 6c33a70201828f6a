"""Nothing lost after a failure, on a real local Ray (and a real redis-server).

A stream function that raises on one batch leaves the broker's entries and the last
checkpoint as they were, and the fixed stage defined again learns every event exactly
once; a restarted registry keeps its publish guard; a storage folder that cannot be
written to stops publishing, not learning; a model that diverges is not published.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import ray
from _pipelines import SCHEMA, EventCounter, OffsetCounter, events_seen, model_state
from conftest import wait_for

from fusionkit.training.protocol import Prediction


# -- helpers --------------------------------------------------------------------------------
def registry():
    import fusionkit as fk

    return fk.api.handles()["registry"]


def learned_counts(fk, name: str) -> np.ndarray:
    """The train stage's state: a version published now, or the last one if it has
    published everything already."""
    return model_state(fk, name, fk.publish(name) or int(fk.models(name)["version"].max()))


# -- a stream function that raises on one batch, through Redis --------------------------------
POISON = 4321  # the event the first definition's function cannot handle


def breaks_on_poison(df: pd.DataFrame) -> pd.DataFrame:
    if (df["i"] == POISON).any():
        raise ValueError(f"cannot handle event {POISON}")
    return df.assign(x2=df["x"] * 2)


def fixed(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(x2=df["x"] * 2)


def produce(client, start: int, n: int, stream: str = "events") -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd(stream, {"data": json.dumps({"i": i, "x": float(i % 7), "y": i % 2})})
    pipe.execute()


@pytest.mark.redis
@pytest.mark.parametrize("parallelism", [1, 2])
def test_failed_stream_function_keeps_its_events_and_learns_each_once(fk, redis_server,
                                                                        parallelism):
    """One actor reads and runs the function (it takes up where it stopped), or a source
    actor hands batches to two operator actors, one of which fails (the pipeline goes back
    to its last checkpoint, its train stage with it)."""
    n = 6000
    client = redis_server.client()
    stream = f"events{parallelism}"
    produce(client, 0, n // 2, stream)
    schema = fk.Schema(SCHEMA)
    src = fk.sources.redis(redis_server.url, stream=stream, group="learners", schema=schema)
    fk.stream("events", source=src, fn=breaks_on_poison, batch_size=200,
              parallelism=parallelism)
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n // 2, timeout=90,
             what="the first half learned")
    assert fk.checkpoint() is not None  # a sound pipeline checkpoints
    produce(client, n // 2, n // 2, stream)
    wait_for(lambda: fk.status().loc["events", "status"] == "failed", timeout=90,
             what="the stream stage to fail on the poison event")
    assert f"cannot handle event {POISON}" in fk.status().loc["events", "error"]
    # no checkpoint of the failed pipeline completes, so nothing it has not processed is
    # acknowledged to Redis: the poison event's entry is still pending in the group
    assert fk.checkpoint(timeout=10) is None
    poison_id = next(eid for eid, f in client.xrange(stream)
                     if json.loads(f[b"data"])["i"] == POISON)
    pending = {r["message_id"] for r in client.xpending_range(stream, "learners", "-", "+", n)}
    assert poison_id in pending
    # the user fixes the function and defines the stage again: it takes up where the
    # failed one stopped, and every event is learned once
    fk.stream("events", source=src, fn=fixed, batch_size=200, parallelism=parallelism)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what="every event learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert fk.status().loc["events", "status"] == "running"
    # checkpoints again, and acknowledges everything (what a checkpoint covers is
    # acknowledged once the next one completes)
    assert fk.checkpoint() is not None and fk.checkpoint() is not None
    wait_for(lambda: client.xpending(stream, "learners")["pending"] == 0, timeout=30,
             what="every entry acknowledged")


# -- the publish guard survives a restart of the registry -------------------------------------
class Oracle:
    """Knows the label rule ``x > 0`` and answers it right until offset ``turn``, wrong after."""

    task = "classification"

    def __init__(self, turn: int):
        self.turn = turn

    def predict(self, X: pd.DataFrame) -> Prediction:
        truth = (X["x"] > 0).to_numpy()
        return Prediction(np.where(X["_offset"].to_numpy() < self.turn, truth, ~truth))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        pass

    def get_state(self) -> bytes:
        return pickle.dumps(self.turn)

    def set_state(self, state: bytes) -> None:
        self.turn = pickle.loads(state)


def registry_pid() -> int | None:
    try:
        return ray.get(registry().pid.remote(), timeout=5)
    except Exception:  # restarting
        return None


def test_publish_guard_survives_a_registry_restart(fk):
    import os
    import signal

    x = np.random.default_rng(1).normal(size=6000)
    src = fk.sources.replay(pd.DataFrame({"x": x, "label": x > 0}), label="label")
    fk.stream("signs", source=src, batch_size=250, paused=True)
    guard = fk.Guard(metric="accuracy_recent", margin=0.05, min_events=0)
    fk.train("guarded-restart", on="signs", label="label", model=Oracle(turn=3000),
             publish_every=500, guard=guard)
    before = registry_pid()
    os.kill(before, signal.SIGKILL)  # Ray restarts the registry: it reads its folder back
    wait_for(lambda: registry_pid() not in (None, before), timeout=90,
             what="the registry to restart")
    fk.resume("signs")
    wait_for(lambda: events_seen(fk, "guarded-restart") >= 6000, timeout=60,
             what="all events learned")
    wait_for(lambda: len(fk.models("guarded-restart")) >= 12, what="twelve versions")
    table = fk.models("guarded-restart").set_index("version")
    good = table[table["events_seen"] <= 3000]
    worse = table[table["events_seen"] > 3000]
    assert (worse["status"] == "held").all(), worse[["status", "reason"]]
    assert fk.live_version("guarded-restart") == good.index.max()


# -- a model that diverges is not published ------------------------------------------------------
def test_diverging_model_is_not_published(fk):
    from river import linear_model, optim

    rng = np.random.default_rng(3)
    size = rng.normal(size=4000) * 1e3
    frame = pd.DataFrame({"size": size, "price": 3.0 * size + 1.0})
    fk.stream("sizes", source=fk.sources.replay(frame), batch_size=100)
    # far too large a step for values of a thousand (and no gradient clipping): the
    # weights overflow to infinity, then NaN, within the first batches
    model = linear_model.LinearRegression(optim.SGD(1e6), clip_gradient=float("inf"))
    fk.train("diverging", on="sizes", label="price", model=model, publish_every=None)
    wait_for(lambda: fk.status().loc["diverging", "status"] == "failed", timeout=60,
             what="the stage to stop on the diverged model")
    error = fk.status().loc["diverging", "error"]
    assert "ModelDivergedError" in error and "not finite" in error, error
    events = fk.events()
    diverged = events[(events["stage"] == "diverging") & (events["kind"] == "diverged")]
    assert len(diverged) == 1 and "not finite" in diverged["detail"].iloc[0]
    assert fk.publish("diverging") in (0, None)
    assert len(fk.models("diverging")) == 0  # nothing was published
    assert "Lower the learning rate" in error  # no missing value: the step is the suspect


def test_a_model_diverging_on_missing_values_says_which(fk):
    """Missing values among the features (a table without defaults gives NaN for a key it
    does not hold) make a linear River model's weights NaN: the error names the columns."""
    from river import linear_model

    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"size": rng.normal(size=2000), "rooms": rng.normal(size=2000)})
    frame["price"] = 3.0 * frame["size"] + 1.0

    def holes(df: pd.DataFrame) -> pd.DataFrame:  # as a feature function may leave them
        return df.assign(rooms=df["rooms"].where(df["_offset"] % 7 != 0))

    fk.stream("holes", source=fk.sources.replay(frame), fn=holes, batch_size=100)
    fk.train("holey", on="holes", label="price", model=linear_model.LinearRegression(),
             publish_every=None)
    wait_for(lambda: fk.status().loc["holey", "status"] == "failed", timeout=60,
             what="the stage to stop on the diverged model")
    error = fk.status().loc["holey", "error"]
    assert "ModelDivergedError" in error and "The features ['rooms'] hold missing values" \
        in error, error


# -- publishing to a folder that cannot be written ------------------------------------------------
def test_publishing_to_an_unwritable_folder_keeps_learning_and_resumes(fk):
    from pathlib import Path

    n = 30_000
    src = fk.sources.synthetic("clicks", rate=3000, seed=8, max_events=n)
    fk.stream("clicks", source=src, batch_size=200, paused=True)
    fk.train("unwritable", on="clicks", label="clicked", model=OffsetCounter(n),
             publish_every="100ms")
    fk.resume("clicks")
    wait_for(lambda: (fk.live_version("unwritable") or 0) >= 2, timeout=60, what="two versions")
    # The tests run as root, and root writes through any file mode (chmod a-w stops no
    # write of root's). So the model's folder is moved away and a regular file put in its
    # place: every write below that path raises NotADirectoryError, for root too, as a full
    # or read-only disk would raise OSError. Put back as it was, it is writable again.
    folder = Path(fk.controller_info().storage) / "models" / "unwritable"
    away = folder.with_name("unwritable.away")
    folder.rename(away)
    folder.write_text("not a folder")
    try:
        wait_for(lambda: "publishing failed" in str(fk.status().loc["unwritable", "error"]),
                 timeout=30, what="the stage to report that publishing fails")
        row = fk.status().loc["unwritable"]
        assert row["status"] == "running"
        assert "NotADirectoryError" in row["error"]
        stuck = fk.live_version("unwritable")
        learned = events_seen(fk, "unwritable")
        wait_for(lambda: events_seen(fk, "unwritable") > learned + 3000, timeout=60,
                 what="learning to go on while publishing fails")
        assert fk.live_version("unwritable") == stuck
        events = fk.events()
        failed = events[(events["stage"] == "unwritable") & (events["kind"] == "publish failed")]
        assert len(failed) == 1  # said once, not at every attempt
    finally:
        folder.unlink()
        away.rename(folder)
    wait_for(lambda: (fk.live_version("unwritable") or 0) > stuck, timeout=30,
             what="publishing again once the folder is writable")
    wait_for(lambda: fk.status().loc["unwritable", "error"] is None, timeout=30,
             what="the error to clear")
    wait_for(lambda: events_seen(fk, "unwritable") >= n, timeout=60, what="every event learned")
    counts = learned_counts(fk, "unwritable")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
