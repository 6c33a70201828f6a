"""The drift watch of a train stage, its spec and the monitor's drift store (no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fusionkit.errors import FusionError
from fusionkit.monitor.drift_store import DriftStore, describe
from fusionkit.monitor.drift_watch import DriftSpec, DriftWatch, error_stream
from fusionkit.monitor.monitor import Monitor
from fusionkit.sources.drift import ConceptDrift, FeatureDrift
from fusionkit.sources.synthetic import Synthetic
from fusionkit.training.learners import Prediction
from fusionkit.training.prequential import Prequential


def batches(n: int, drift=(), seed: int = 0, size: int = 500):
    src = Synthetic(rate=None, seed=seed, max_events=n, start_time=0.0, drift=drift)
    src.open()
    while (b := src.read(size)) is not None:
        yield b


def rule_prediction(batch: pd.DataFrame) -> Prediction:
    """A fixed model of the synthetic clicks: click when dwell is long and price low."""
    score = np.log(batch["dwell"].to_numpy()) - 0.5 * np.log(batch["price"].to_numpy())
    proba = 1.0 / (1.0 + np.exp(-(score - 1.5) * 2.0))
    return Prediction((proba > 0.5).astype("int64"), proba)


def run(watch: DriftWatch, frames) -> tuple[list[dict], list[dict]]:
    rows, alarms = [], []
    for b in frames:
        watch.observe(None, b, b["clicked"], rule_prediction(b))
        r, a = watch.take()
        rows += r
        alarms += a
    return rows, alarms


# -- errors ------------------------------------------------------------------------------
labels = st.lists(st.sampled_from([0, 1, None]), min_size=1, max_size=50)


@given(labels, st.randoms(use_true_random=False))
def test_error_stream_matches_prequential(preds, rnd):
    ys = [rnd.choice([0, 1]) for _ in preds]
    pred = np.array(preds, dtype=object)
    want = Prequential("classification").error_stream(ys, Prediction(pred))
    np.testing.assert_array_equal(error_stream("classification", ys, pred), want)


def test_error_stream_of_a_regressor_and_bad_lengths():
    got = error_stream("regression", np.array([1.0, 2.0, 3.0]), np.array([1.5, np.nan, 1.0]))
    np.testing.assert_array_equal(got, [0.5, np.nan, 2.0])
    with pytest.raises(ValueError, match="2 labels but 3 predictions"):
        error_stream("classification", [1, 0], [1, 0, 1])


# -- the spec ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"policy": "rest"}, "Did you mean 'reset'"),
    ({"features": "price"}, r"write \['price'\]"),
    ({"window": 1}, "window must hold at least 2 events"),
    ({"window": 2.5}, "window must be a number of events"),
    ({"psi_alarm": 0}, "psi_alarm must be a positive number"),
    ({"ks_alpha": 1.5}, r"ks_alpha must be a probability in \(0, 1\)"),
    ({"reference": "last 10 events"}, "reference must be 'first N events'"),
    ({"concept": "adwn"}, "Did you mean 'adwin'"),
    ({"concept": "adwin", "concept_params": {"nope": 1}}, "bad parameter"),
])  # fmt: skip
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(FusionError, match=message):
        DriftSpec(**kwargs)


def test_specs_differ_by_token_not_by_settings():
    a, b = DriftSpec(), DriftSpec()
    assert a == b and a.token != b.token


# -- the watch ---------------------------------------------------------------------------
def test_watch_reports_window_rows_error_rate_and_alarms():
    drift = [FeatureDrift("price", at=15_000, shift=1.0), FeatureDrift("device", at=15_000,
                                                                          probs={"desktop": 0.8})]
    watch = DriftWatch(DriftSpec(features=("price", "hour", "device")), "ctr", "classification")
    rows, alarms = run(watch, batches(25_000, drift))
    df = pd.DataFrame(rows)
    windows = df[df["kind"] != "concept"]
    assert set(windows["feature"]) == {"price", "hour", "device", "prediction"}
    assert sorted(set(windows["offset"])) == [14_999, 19_999, 24_999]
    flagged = {(a["feature"], a["offset"]) for a in alarms}
    assert {("price", 19_999), ("device", 19_999)} <= flagged  # the first window after it
    assert min(a["offset"] for a in alarms) >= 15_000 and ("hour", 19_999) not in flagged
    concept = df[df["kind"] == "concept"]
    assert concept["events"].sum() == 25_000  # every event's error counted once
    assert concept["error_rate"].between(0.0, 1.0).all()


def test_watch_state_resumes_where_it_was():
    drift = [FeatureDrift("price", at=20_000, shift=1.0), ConceptDrift(at=20_000)]
    frames = list(batches(30_000, drift))
    spec = DriftSpec(features=("price",), reference=5000, window=2500)
    whole = DriftWatch(spec, "ctr", "classification")
    rows_whole, alarms_whole = run(whole, frames)

    first = DriftWatch(spec, "ctr", "classification")
    run(first, frames[:23])
    resumed = first.fresh().resume(first.get_state())
    rows, alarms = run(resumed, frames[23:])
    tail = [r for r in rows_whole if r["offset"] >= 11_500 and r["kind"] != "concept"]
    assert [(r["feature"], r["offset"], r["psi"]) for r in rows if r["kind"] != "concept"] == [
        (r["feature"], r["offset"], r["psi"]) for r in tail]
    assert [(a["kind"], a["offset"]) for a in alarms] == [
        (a["kind"], a["offset"]) for a in alarms_whole]
    # a checkpoint of another watch (or of none) starts this one over
    other = DriftWatch(DriftSpec(features=("price",)), "ctr", "classification")
    assert first.resume(other.get_state()).monitor.feature_monitor.seen == 0
    assert first.resume(None).monitor.feature_monitor.seen == 0


def test_windows_not_yet_reported_are_in_the_checkpoint():
    """A window tested before a checkpoint whose row had not reached the monitor when the
    actor died: the replay after recovery does not test it again, so the state carries it."""
    spec = DriftSpec(features=("price",), reference=5000, window=2500)
    watch = DriftWatch(spec, "ctr", "classification")
    for b in batches(8000):
        watch.observe(None, b, b["clicked"], rule_prediction(b))
    resumed = watch.fresh().resume(watch.get_state())  # nothing taken: both windows pending
    rows, _ = resumed.take()
    windows = [(r["feature"], r["offset"]) for r in rows if r["kind"] != "concept"]
    assert sorted(windows) == [("prediction", 7499), ("price", 7499)]
    assert watch.take()[0][:2] == rows[:2] and resumed.take() == ([], [])


def test_watch_stops_itself_on_a_missing_column_and_says_why():
    watch = DriftWatch(DriftSpec(features=("nope",)), "ctr", "classification")
    rows, alarms = run(watch, batches(1000))
    assert rows == [] and alarms == []
    assert "nope" in watch.error
    assert watch.events[-1]["kind"] == "drift" and "stopped" in watch.events[-1]["detail"]


# -- the monitor's store -------------------------------------------------------------------
def alarm(**kw):
    base = {"time": 1.0, "stage": "ctr", "kind": "feature", "feature": "price",
            "statistic": "psi", "value": 0.4, "threshold": 0.2, "offset": 19_999,
            "event_time": 2.0, "p_value": 1e-9, "before": np.nan, "after": np.nan}
    return {**base, **kw}


def test_store_keeps_each_alarm_once_and_replayed_windows_once():
    store = DriftStore(maxrows=100)
    row = {"time": 1.0, "kind": "feature", "feature": "price", "offset": 19_999, "psi": 0.4}
    assert len(store.add("ctr", [row], [alarm()])) == 1
    assert store.add("ctr", [{**row, "time": 2.0}], [alarm(time=2.0)]) == []  # replayed
    assert len(store.frame("ctr")) == 1 and store.frame("ctr")["time"].iloc[0] == 2.0
    assert len(store.add("ads", [], [alarm()])) == 1  # same alarm, another stage
    assert list(store.alarm_frame()["stage"]) == ["ctr", "ads"]
    store.drop("ctr")
    assert len(store.frame("ctr")) == 0 and list(store.alarm_frame()["stage"]) == ["ads"]


def test_store_rows_are_bounded():
    store = DriftStore(maxrows=10)
    store.add("ctr", [{"time": float(i), "kind": "concept", "feature": "error", "offset": i}
                      for i in range(25)], [])  # fmt: skip
    assert list(store.frame("ctr")["offset"]) == list(range(15, 25))


def test_monitor_logs_alarms_as_events():
    m = Monitor()
    m.drift_report("ctr", [], [alarm(), alarm(kind="concept", feature="error", statistic="adwin",
                                              value=0.2, threshold=0.0, before=0.1, after=0.3)])
    events = [e for e in m.events() if e["kind"] == "alarm"]
    assert [e["status"] for e in events] == ["feature", "concept"]
    assert "price psi 0.4 >= 0.2" in events[0]["detail"]
    assert "error 0.1 -> 0.3" in events[1]["detail"]
    assert list(m.alarms("ctr")["kind"]) == ["feature", "concept"]
    m.forget("ctr")
    assert len(m.alarms()) == 0


def test_describe_an_alarm():
    assert describe(alarm()) == "feature drift: price psi 0.4 >= 0.2 (p 1e-09) at offset 19999"
