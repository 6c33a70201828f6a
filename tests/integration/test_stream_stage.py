"""Stream stages on a real local Ray: keyed parallelism, backpressure, late events."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import wait_for

from fusionkit.sources import Synthetic
from fusionkit.streaming.base import Operator
from fusionkit.streaming.windows import TumblingWindow

AGG = {"n": ("clicked", "count"), "clicks": ("clicked", "sum"), "spend": ("price", "mean"),
       "top": ("price", "max")}


class Collect(Operator):
    """A test sink at the end of a chain: each non-empty batch it sees becomes one pickle file
    under ``folder``, named after the process that wrote it, and passes on unchanged. A sink:
    a stage with one in its chain reads at once (it has somewhere to send its events)."""

    sink = True

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if len(batch):
            batch.to_pickle(os.path.join(self.folder, f"{os.getpid()}-{uuid.uuid4().hex}.pkl"))
        return batch


def collected(folder: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Everything the sinks wrote, and what each process wrote."""
    by_pid: dict[str, list[pd.DataFrame]] = {}
    for path in sorted(folder.glob("*.pkl")):
        by_pid.setdefault(path.name.split("-")[0], []).append(pd.read_pickle(path))
    parts = {pid: pd.concat(frames, ignore_index=True) for pid, frames in by_pid.items()}
    every = pd.concat(list(parts.values()), ignore_index=True) if parts else pd.DataFrame()
    return every, parts


def infos(fk, name: str) -> list[dict]:
    return fk.infos(name)


def test_keyed_windows_are_the_same_with_parallelism_1_and_3(fk, tmp_path):
    results = {}
    for parallelism in (1, 3):
        folder = tmp_path / f"p{parallelism}"
        folder.mkdir()
        # event times are a function of the offset (start_time fixed, nominal 10k events/s,
        # in order), so both runs see the same events at the same event times
        src = fk.sources.synthetic("clicks", rate=None, seed=3, max_events=12_000,
                                   start_time=0.0)
        fk.stream("clicks", source=src, key_by="user_id", parallelism=parallelism,
                  window=fk.tumbling("250ms", agg=AGG, key="user_id"),
                  operators=[Collect(folder)], batch_size=500)
        wait_for(lambda: fk.status().loc["clicks", "status"] == "finished", timeout=90,
                 what=f"bounded stream with parallelism {parallelism} finished")
        assert fk.status().loc["clicks", "events"] == 12_000
        assert fk.status().loc["clicks", "late"] == 0  # in order: nothing is late
        results[parallelism] = collected(folder)
        fk.stop("clicks")

    one, _ = results[1]
    three, parts = results[3]
    cols = ["user_id", "window_start", "window_end", *AGG, "_offset"]
    order = ["window_start", "user_id"]
    a = one[cols].sort_values(order, ignore_index=True)
    b = three[cols].sort_values(order, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
    assert a["n"].sum() == 12_000  # every event in exactly one window
    assert not a.duplicated(["user_id", "window_start"]).any()  # each window emitted once
    # the three operator actors each held their own users: the work really was split
    assert len(parts) == 3
    users = [set(p["user_id"]) for p in parts.values()]
    assert all(users) and not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])

    # and both equal a pandas computation over the same events, read in one process
    src = Synthetic("clicks", rate=None, seed=3, max_events=12_000, start_time=0.0)
    src.open()
    events = src.read(12_000)
    events["window_start"] = np.floor(events["_event_time"] / 0.25) * 0.25
    want = (events.groupby(["window_start", "user_id"]).agg(**AGG, _offset=("_offset", "max"))
            .reset_index())
    np.testing.assert_array_equal(a["n"], want["n"])
    np.testing.assert_array_equal(a["user_id"], want["user_id"])
    np.testing.assert_array_equal(a["_offset"], want["_offset"])
    np.testing.assert_allclose(a["spend"], want["spend"], rtol=1e-12)


class SlowLearner:
    """A learner that takes ``delay`` seconds per batch: a deliberately slow train stage."""

    task = "classification"

    def __init__(self, delay: float):
        self.delay = delay

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(X), dtype=np.int64)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        time.sleep(self.delay)  # the work this stage stands for

    def get_state(self) -> bytes:
        return b""

    def set_state(self, state: bytes) -> None:
        pass


def test_slow_train_stage_bounds_the_queue_and_the_source_lags(fk):
    batch, bound = 200, 2
    # the source wants 20k events/s (100 batches/s); the learner takes at most 20 batches/s
    src = fk.sources.synthetic("fast", rate=20_000, seed=1)
    fk.stream("fast", source=src, batch_size=batch, max_inflight=bound)
    fk.train("slow", on="fast", model=SlowLearner(0.05), label="clicked",
             publish_every="1h")

    samples = []

    def sample():
        stream = infos(fk, "fast")[0]  # read the sender first: what it sent can only grow
        train = infos(fk, "slow")[0]
        samples.append({"t": time.monotonic(), "lag": stream["lag"],
                        "inflight": stream["inflight"],
                        "waiting": train["waiting"],
                        "sent": stream["totals"].get("events_out", 0),
                        "learned": train["totals"].get("events_in", 0)})
        return samples[-1]["lag"] > 2.0

    wait_for(sample, timeout=60, interval=0.1, what="the source to fall 2 s behind")
    assert len(samples) >= 5
    for s in samples:
        assert s["inflight"] <= bound, s  # never more than `bound` batches at the trainer
        assert s["waiting"] <= bound, s
        # what the stream sent and the trainer has not taken: at most the batches in flight
        # plus the one the stream is sending
        assert s["sent"] - s["learned"] <= (bound + 1) * batch, s
    assert max(s["inflight"] for s in samples) >= 1  # the hand-off was in use
    first, last = samples[0], samples[-1]
    assert last["lag"] > first["lag"] + 1.0  # the source fell behind instead
    # the trainer set the pace (at most 4k events/s): well under the source's schedule
    assert last["sent"] - first["sent"] < 0.5 * 20_000 * (last["t"] - first["t"])
    wait_for(lambda: fk.metrics("fast").get("lag_s", pd.Series(dtype=float)).max() > 1.0,
             what="the lag in the stream's metrics")
    assert fk.status().loc["slow", "status"] == "running"


def test_late_events_are_routed_aside_and_counted(fk, tmp_path):
    n = 15_000
    # up to 50 ms of disorder against 20 ms windows that wait 30 ms: some events are late
    src = fk.sources.synthetic("late", rate=None, seed=5, max_events=n, disorder=0.05,
                               start_time=0.0)
    window = fk.tumbling("20ms", agg={"n": ("clicked", "count")}, allowed_lateness="30ms")
    fk.stream("late", source=src, window=window, operators=[Collect(tmp_path)],
              batch_size=700)

    # the same window over the same events in one process: late events do not depend on how
    # the stream is cut into batches, so the count is exact
    local = Synthetic("late", rate=None, seed=5, max_events=n, disorder=0.05, start_time=0.0)
    local.open()
    op = TumblingWindow("20ms", agg={"n": ("clicked", "count")}, allowed_lateness="30ms")
    fired = []
    while (b := local.read(1000)) is not None:
        fired.append(op.process(b))
    fired.append(op.flush())  # the end of the stream closes the windows still open
    expected = pd.concat(fired, ignore_index=True)
    expected_late = op.late_count
    assert 100 < expected_late < n // 2

    wait_for(lambda: fk.status().loc["late", "status"] == "finished", timeout=60,
             what="bounded stream finished")
    row = fk.status().loc["late"]
    assert row["events"] == n
    assert row["late"] == expected_late
    assert row["dead_letters"] == expected_late  # late events are kept aside, with a reason
    dl = fk.dead_letters("late")
    assert len(dl) == expected_late
    assert set(dl["reason"]) == {"late event (window already closed)"}
    windows, _ = collected(tmp_path)
    assert windows["n"].sum() + expected_late == n  # on time + late = every event
    # every window once, the last ones included (the stream's end flushed them), and
    # nothing else: the definition-time check did not pass its sample to the sink
    windows = windows.sort_values("window_start", ignore_index=True)
    assert not windows["window_start"].duplicated().any()
    np.testing.assert_array_equal(windows["window_start"], expected["window_start"])
    np.testing.assert_array_equal(windows["n"], expected["n"])
    wait_for(lambda: fk.metrics("late").get("late", pd.Series(dtype=float)).sum()
             == expected_late, what="late events in the stage's metrics")
