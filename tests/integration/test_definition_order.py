"""A stream stage defined before its consumers loses nothing, on the session's real Ray.

A stream stage reads its source only once something takes its events: a stage defined on
it, a sink in its chain, ``fk.resume(name)`` or ``start=True``. Until then its status is
``waiting``, with the reason. The tests define the stream in one call and the train stage
in another, seconds later (as two notebook cells would), and count what the learner took:
every event exactly once, for a bounded DataFrame replay (with one actor, and with a
source actor and operator actors) and for a real redis-server's stream.
"""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
from _pipelines import SCHEMA, EventCounter, OffsetCounter, events_seen, learned_counts
from conftest import wait_for

GAP = 2.0  # seconds between the two definitions: a user reading the first cell's output


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"k": np.arange(n) % 7, "x": np.arange(n, dtype="float64") % 5,
                         "y": np.arange(n) % 2})


def status_of(fk, name: str) -> str:
    return str(fk.status().loc[name, "status"])


def wait_waiting(fk, name: str) -> None:
    wait_for(lambda: status_of(fk, name) == "waiting", timeout=30,
             what=f"stream {name!r} to wait for a consumer")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_replay_then_train_in_two_calls_learns_every_event_once(fk, parallelism):
    """A bounded replay at full speed, then a train stage seconds later: before the fix the
    replay was over before the train stage existed, and it learned 0 events."""
    n = 5_000
    fk.stream("rows", source=fk.sources.replay(frame(n)), batch_size=250,
              parallelism=parallelism, key_by="k" if parallelism > 1 else None)
    wait_waiting(fk, "rows")
    time.sleep(GAP)  # the gap between two cells, not a synchronisation
    row = fk.status().loc["rows"]
    assert row["status"] == "waiting" and row["events"] == 0, row.to_dict()
    fk.train("count", on="rows", label="y", model=OffsetCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what=f"{n} events learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert status_of(fk, "rows") in ("running", "finished")


@pytest.mark.redis
def test_redis_stream_then_train_in_two_calls_learns_every_event_once(fk, redis_server):
    """Entries already in a Redis stream, and more written during the gap: the stream stage
    acknowledges none of them before a train stage takes them, which then learns each one
    once."""
    n = 4_000
    client = redis_server.client()
    write(client, 0, n // 2)
    src = fk.sources.redis(redis_server.url, stream="events", schema=fk.Schema(SCHEMA))
    fk.stream("events", source=src, batch_size=500)
    wait_waiting(fk, "events")
    write(client, n // 2, n // 2)
    time.sleep(GAP)  # the gap between two cells, not a synchronisation
    assert fk.status().loc["events", "events"] == 0
    assert fk.checkpoint() is not None  # a checkpoint in the gap acknowledges nothing read
    assert sum(g["pending"] for g in client.xinfo_groups("events")) <= 500  # the probe's at most
    fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what=f"{n} events learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"


def write(client, start: int, n: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.xadd("events", {"data": json.dumps({"i": i, "x": float(i % 7), "y": i % 2})})
    pipe.execute()


def test_status_says_waiting_and_why(fk):
    """fk.status(), the controller's row (what the notebook's stage card and the dashboard
    show) and peek: waiting, the reason with both ways out, and the definition's sample."""
    fk.stream("clicks", source=fk.sources.synthetic("clicks", rate=1_000, seed=2))
    wait_waiting(fk, "clicks")
    reason = fk.status().loc["clicks", "reason"]
    assert reason.startswith("no stage reads 'clicks' yet: define one on it")
    assert "fk.resume('clicks') to run it alone" in reason
    from fusionkit.notebook.live import row_html, snapshot

    row = snapshot(("clicks",))["clicks"]  # the rows the stage card and the dashboard read
    assert row["status"] == "waiting" and row["reason"] == reason
    assert "no stage reads" in row_html(row)
    head = fk.peek("clicks", 3)  # the sample the definition read: the source did not move on
    assert len(head) == 3 and "clicked" in head.columns
    assert fk.status().loc["clicks", "events"] == 0


def test_resume_or_start_runs_a_stream_alone(fk):
    """fk.resume runs a waiting stream with nothing downstream, and so does start=True."""
    fk.stream("alone", source=fk.sources.replay(frame(3_000)), batch_size=500)
    wait_waiting(fk, "alone")
    fk.resume("alone")
    wait_for(lambda: status_of(fk, "alone") == "finished", timeout=60, what="replay finished")
    assert fk.status().loc["alone", "events"] == 3_000
    assert fk.status().loc["alone", "reason"] is None
    fk.stream("started", source=fk.sources.replay(frame(2_000)), batch_size=500, start=True)
    wait_for(lambda: status_of(fk, "started") == "finished", timeout=60, what="replay finished")
    assert fk.status().loc["started", "events"] == 2_000
    with pytest.raises(ValueError, match="paused=True and start=True"):
        fk.stream("both", source=fk.sources.replay(frame(10)), paused=True, start=True)


def test_paused_waits_for_resume_even_with_a_consumer(fk):
    """paused=True keeps its meaning: a train stage defined on it does not start it."""
    n = 2_000
    fk.stream("rows", source=fk.sources.replay(frame(n)), batch_size=250, paused=True)
    fk.train("count", on="rows", label="y", model=OffsetCounter(n), publish_every=None)
    assert status_of(fk, "rows") == "paused"
    fk.resume("rows")
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=60, what=f"{n} events learned")
    assert (learned_counts(fk, "count") == 1).all()


def test_a_stream_waits_again_when_its_last_consumer_is_stopped(fk):
    """Stopping the only train stage puts its stream back to waiting (no events read for
    nobody); the next train stage defined on it starts it again."""
    n = 200_000
    fk.stream("clicks", source=fk.sources.replay(frame(n), rate=5_000), batch_size=250)
    fk.train("a", on="clicks", label="y", model=OffsetCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "a") >= 1_000, timeout=60, what="events learned")
    fk.stop("a")
    wait_waiting(fk, "clicks")
    assert "'a' was stopped" in fk.status().loc["clicks", "reason"]
    read = fk.status().loc["clicks", "events"]
    time.sleep(GAP)  # a while with no consumer, not a synchronisation
    assert fk.status().loc["clicks", "events"] == read
    fk.train("b", on="clicks", label="y", model=OffsetCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "b") >= 1_000, timeout=60, what="events learned by b")
    assert status_of(fk, "clicks") == "running"


def test_waiting_outlives_a_controller_restart_and_a_killed_stream_actor(fk):
    """The waiting is part of the stage's definition: the controller Ray restarts reads it
    back, and a stream actor Ray restarts (its pipeline rolled back to a checkpoint) waits
    again; the train stage defined afterwards still learns every event once."""
    n = 5_000
    fk.stream("rows", source=fk.sources.replay(frame(n)), batch_size=250)
    wait_waiting(fk, "rows")
    assert fk.checkpoint() is not None
    before = fk.controller_info()
    os.kill(before.pid, signal.SIGKILL)
    assert fk.controller_info().restarts == before.restarts + 1  # waits through the restart
    assert status_of(fk, "rows") == "waiting" and fk.status().loc["rows", "events"] == 0
    recoveries = len(fk.recoveries())
    pid = fk.infos("rows")[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > recoveries, timeout=90, what="the recovery")
    wait_waiting(fk, "rows")
    assert fk.infos("rows")[0]["pid"] != pid
    assert fk.status().loc["rows", "events"] == 0
    fk.train("count", on="rows", label="y", model=OffsetCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what=f"{n} events learned")
    counts = learned_counts(fk, "count")
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"


def test_a_stream_with_a_sink_runs_at_once(fk, tmp_path):
    """A sink in the chain is somewhere to send events: no need to wait."""
    from fusionkit.streaming.base import Operator

    class FileSink(Operator):
        sink = True

        def __init__(self, path):
            self.path = str(path)

        def process(self, batch):
            with open(self.path, "a") as f:
                f.write(f"{len(batch)}\n")
            return batch

    out = tmp_path / "rows.txt"
    fk.stream("sunk", source=fk.sources.replay(frame(1_000)), batch_size=250,
              operators=[FileSink(out)])
    wait_for(lambda: status_of(fk, "sunk") == "finished", timeout=60, what="replay finished")
    assert sum(int(x) for x in out.read_text().split()) == 1_000
