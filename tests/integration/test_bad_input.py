"""Bad input and overload on a real local Ray: nothing crashes, nothing is lost, memory stays flat."""

from __future__ import annotations

import pickle
import sys
import time

import numpy as np
import pandas as pd
import psutil
import ray.cloudpickle
from conftest import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.training.protocol import Prediction

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the learners travel by value

SCHEMA = {"amount": "number", "count": "integer", "kind": "string", "label": "integer"}
N_BAD = 10_000
N_GOOD = 20_000

# malformed values, by what is wrong with them; each becomes one bad event
BAD_VALUES = {
    "amount": st.one_of(st.text(min_size=1, max_size=8).filter(lambda t: not _numeric(t)),
                        st.none(), st.just(float("inf")), st.just(float("-inf")),
                        st.just(float("nan")), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    "count": st.one_of(st.just(1.5), st.text(min_size=1, max_size=5).filter(lambda t: not _numeric(t)),
                       st.none()),
    "kind": st.one_of(st.none(), st.integers(), st.floats(allow_nan=False)),
    "label": st.one_of(st.none(), st.just("yes?"), st.just(float("nan"))),
}


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


class CountingLearner:
    """Counts the events it learned, and their offsets."""

    task = "classification"

    def __init__(self):
        self.offsets: list[int] = []

    def predict(self, X):
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X, y):
        self.offsets.extend(X["_offset"].tolist())

    def get_state(self):
        import pickle

        return pickle.dumps(self.offsets)

    def set_state(self, state):
        import pickle

        self.offsets = pickle.loads(state)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_fuzz_malformed_events_go_to_dead_letters(fk_session, data, seed):
    import fusionkit as fk

    rng = np.random.default_rng(seed)
    # a palette of malformed values drawn by hypothesis, spread over 10k bad events
    palette = {col: data.draw(st.lists(strat, min_size=5, max_size=20)) for col, strat in
               BAD_VALUES.items()}
    good = pd.DataFrame({"amount": rng.normal(100, 10, N_GOOD), "count": rng.integers(0, 9, N_GOOD),
                         "kind": rng.choice(["a", "b", "c"], N_GOOD),
                         "label": rng.integers(0, 2, N_GOOD)}).astype(object)
    bad = good.sample(N_BAD, replace=True, random_state=seed).reset_index(drop=True).copy()
    cols = rng.choice(list(BAD_VALUES), N_BAD)
    for i, col in enumerate(cols):
        values = palette[col]
        bad.at[i, col] = values[rng.integers(len(values))]
    data_frame = pd.concat([good, bad], ignore_index=True)
    order = rng.permutation(len(data_frame))
    data_frame = data_frame.iloc[order].reset_index(drop=True)
    bad_offsets = set(np.flatnonzero(order >= N_GOOD).tolist())
    try:
        fk.stream("pay", source=fk.sources.replay(data_frame), schema=fk.Schema(SCHEMA),
                  batch_size=1000, paused=True)
        fk.train("learn", on="pay", label="label", model=CountingLearner(), publish_every=None)
        fk.resume("pay")
        wait_for(lambda: fk.infos("learn")[0].get("events_seen", 0) >= N_GOOD,
                 timeout=120, what="every good event learned")
        wait_for(lambda: fk.status().loc["pay", "dead_letters"] >= N_BAD, timeout=60,
                 what="every bad event dead-lettered")
        dl = fk.dead_letters("pay")
        assert len(dl) == N_BAD
        assert set(dl["offset"]) == bad_offsets
        assert dl["reason"].str.len().min() > 0
        assert dl["reason"].str.contains("'amount'|'count'|'kind'|'label'").all()
        st_ = fk.status()
        assert st_.loc["learn", "events"] == N_GOOD
        assert (st_["restarts"] == 0).all()
        assert set(st_["status"]) <= {"running", "finished"}
    finally:
        fk.stop()


class SlowLearner(CountingLearner):
    def learn(self, X, y):
        time.sleep(0.02)  # ~25k events/s at most with batches of 500


def _rss(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def test_overload_keeps_memory_and_inflight_bounded(fk):
    src = fk.sources.synthetic("clicks", rate=400_000, seed=3)
    fk.stream("clicks", source=src, batch_size=500, max_inflight=4)
    fk.train("slow", on="clicks", label="clicked", model=SlowLearner(), publish_every=None)
    wait_for(lambda: fk.infos("slow")[0].get("events_seen", 0) > 5_000,
             what="the slow trainer learning")
    pids = [i["pid"] for i in fk.infos("clicks") + fk.infos("slow")]
    me = psutil.Process()
    rss0, driver0 = _rss(pids), me.memory_info().rss
    inflight, waiting, lags = [], [], []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        inflight.append(fk.infos("clicks")[0]["inflight"])
        waiting.append(fk.infos("slow")[0]["waiting"])
        lags.append(fk.infos("clicks")[0]["lag"])
        time.sleep(0.2)
    assert max(inflight) <= 4, f"in-flight batches went to {max(inflight)}"
    assert max(waiting) <= 4, f"queued pushes at the trainer went to {max(waiting)}"
    assert lags[-1] > lags[0] > 0, "the source's lag behind its schedule should grow, not memory"
    growth = _rss(pids) - rss0
    assert growth < 150 * 2**20, f"stage actors grew by {growth / 2**20:.0f} MiB"
    assert me.memory_info().rss - driver0 < 50 * 2**20


class VerySlowLearner(CountingLearner):
    def learn(self, X, y):
        super().learn(X, y)
        time.sleep(0.1)  # at most ~5k events/s with batches of 500


def test_shedding_drops_counted_batches_instead_of_lagging(fk):
    """``overload="shed"``: a source at 4x the trainer's capacity reads on; what the trainer
    has no room for is dropped and counted, and every event read is either learned exactly
    once or counted as shed. (That the source then keeps its schedule is a matter of time,
    which tests do not assert: its lag is in the stage's metrics.)"""
    rate = 20_000
    src = fk.sources.synthetic("clicks", rate=rate, seed=4)
    fk.stream("clicks", source=src, batch_size=500, max_inflight=2, overload="shed",
              paused=True)
    fk.train("slow", on="clicks", label="clicked", model=VerySlowLearner(), publish_every=None)
    fk.resume("clicks")
    wait_for(lambda: fk.status().loc["clicks", "shed"] >= 40_000, timeout=120,
             what="40k events shed")
    fk.pause("clicks")

    def settled():
        sent = fk.infos("clicks")[0]["totals"].get("events_out", 0)
        return sent > 0 and fk.infos("slow")[0].get("events_seen", 0) == sent

    wait_for(settled, timeout=60, what="the trainer to take every batch sent")
    row = fk.status().loc["clicks"]
    version = fk.publish("slow")
    offsets = pickle.loads(ray.get(fk.api.handles()["registry"].state.remote("slow", version)))
    assert len(offsets) == len(set(offsets)), "an event was learned twice"
    assert len(offsets) > 0 and row["shed"] > 0
    assert len(offsets) + row["shed"] == row["events"], (len(offsets), row["shed"], row["events"])
    assert max(offsets) < row["events"]
    wait_for(lambda: fk.metrics("clicks").get("shed", pd.Series(dtype=float)).sum()
             == row["shed"], what="the shed count in the stage's metrics")
