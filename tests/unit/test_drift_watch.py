"""The drift watch of a train stage, its spec and the monitor's drift store (no Ray)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from _drift_data import batches, rule_prediction
from hypothesis import given
from hypothesis import strategies as st
from river import linear_model, preprocessing

from fusionkit.drift_detection.psi import psi
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.drift_detection.store import DriftStore, describe
from fusionkit.drift_detection.watch import DriftWatch, error_stream
from fusionkit.errors import FusionError
from fusionkit.monitor.monitor import Monitor
from fusionkit.sources.drift import ConceptDrift, FeatureDrift
from fusionkit.training.learners import adapt
from fusionkit.training.prequential import Prequential
from fusionkit.training.protocol import Prediction


def run(watch: DriftWatch, frames) -> tuple[list[dict], list[dict]]:
    rows, alarms = [], []
    for b in frames:
        watch.observe(b, b["clicked"], rule_prediction(b))
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
    ({"prediction_sample": 1}, "prediction sample must be at least 2 rows"),
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
        watch.observe(b, b["clicked"], rule_prediction(b))
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
    assert watch.events[-1].kind == "drift" and "stopped" in watch.events[-1].detail


# -- a learning model ------------------------------------------------------------------------
NUMERIC = ["price", "dwell", "age", "hour", "position"]


class Stage:
    """What a train stage does with each batch (fusionkit.training.worker), without
    Ray: predict then learn the batch, the prequential step, then the drift watch, handed
    the stage's learner (which scores prediction drift)."""

    def __init__(self, spec: DriftSpec, **options):
        model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
        self.learner = adapt(model, features=NUMERIC, **options)
        self.prequential = Prequential(self.learner.task)
        self.drift = DriftWatch(spec, "ctr", self.learner.task, NUMERIC)
        self.predictions: list[np.ndarray] = []  # the prequential ones, as the stage made them

    def learn(self, batch: pd.DataFrame) -> None:
        y = batch["clicked"]
        pred = self.learner.predict_learn(batch, y)
        self.prequential.update(y, pred)
        self.drift.observe(batch, y, pred, self.learner)
        self.predictions.append(pred.proba)


def learn(stage: Stage, frames) -> tuple[pd.DataFrame, list[dict]]:
    rows, alarms = [], []
    for b in frames:
        stage.learn(b)
        r, a = stage.drift.take()
        rows += r
        alarms += a
    return pd.DataFrame(rows), alarms


def test_a_learning_model_raises_no_prediction_drift_on_a_stationary_stream():
    """Learned once per batch, the model's answers keep moving for tens of thousands of
    events: its later predictions are far from its first ones (PSI > 1) though nothing in
    the stream changed. Both sides of a test are scored by the same model: no alarm."""
    stage = Stage(DriftSpec(), mini_batch=True)  # fk.watch_drift's defaults
    rows, alarms = learn(stage, batches(35_000, seed=3))
    assert alarms == [], alarms
    pred = rows[rows["kind"] == "prediction"]
    assert list(pred["offset"]) == [14_999, 19_999, 24_999, 29_999, 34_999]
    assert (pred["psi"] < 0.1).all() and not pred["alarm"].any()
    seen = np.concatenate(stage.predictions)
    assert psi(seen[:10_000], seen[-5_000:]) > 1.0  # what the model's learning looked like


@pytest.mark.parametrize("mini_batch", [False, True])
def test_a_feature_shift_and_the_prediction_shift_it_causes_are_detected(mini_batch):
    """Dwell time moves up by one standard deviation at event 20,000; the model's click
    probability rises with it. Both are flagged in the first window that holds the shift,
    nothing before it."""
    stage = Stage(DriftSpec(), mini_batch=mini_batch)
    drift = [FeatureDrift("dwell", at=20_000, shift=1.0)]
    rows, alarms = learn(stage, batches(25_000, drift, seed=1))
    windows = [a for a in alarms if a["kind"] != "concept"]  # more clicks: more errors too
    assert sorted((a["kind"], a["feature"], a["offset"]) for a in windows) == [
        ("feature", "dwell", 24_999), ("prediction", "prediction", 24_999)]
    pred = rows[rows["kind"] == "prediction"].set_index("offset")
    assert pred.loc[24_999, "psi"] > 2 * pred.loc[24_999, "psi_threshold"]


def test_prediction_drift_compares_like_with_like_after_a_reset():
    """A learner replaced by a fresh model (the reset policy) answers differently at once:
    the next windows compare its answers with its own answers, so no alarm."""
    stage = Stage(DriftSpec(concept=None), mini_batch=True)
    frames = list(batches(30_000, seed=2))
    learn(stage, frames[:35])  # reset at event 17,500, in the second window
    stage.learner = adapt(preprocessing.StandardScaler() | linear_model.LogisticRegression(),
                          features=NUMERIC, mini_batch=True)  # fmt: skip
    rows, alarms = learn(stage, frames[35:])
    assert alarms == [], alarms
    assert len(rows[rows["kind"] == "prediction"]) == 3


def test_a_learning_watch_resumes_where_it_was():
    """The samples, the generator that draws them and the windows travel with the
    checkpoint: a stage restored from one tests the same windows on the same rows."""
    frames = list(batches(30_000, [FeatureDrift("dwell", at=20_000, shift=1.0)]))
    whole = Stage(DriftSpec(reference=5000, window=2500))
    rows_whole, alarms_whole = learn(whole, frames)

    first = Stage(DriftSpec(reference=5000, window=2500))
    learn(first, frames[:23])
    state, learner = first.drift.get_state(), copy.deepcopy(first.learner)
    first.drift, first.learner = first.drift.fresh().resume(state), learner
    rows, alarms = learn(first, frames[23:])
    pred = rows[rows["kind"] == "prediction"]
    tail = rows_whole[(rows_whole["kind"] == "prediction") & (rows_whole["offset"] >= 11_500)]
    assert list(pred["offset"]) == list(tail["offset"]) and len(pred) == 8
    np.testing.assert_array_equal(pred["psi"].to_numpy(), tail["psi"].to_numpy())
    assert [(a["kind"], a["offset"]) for a in alarms] == [
        (a["kind"], a["offset"]) for a in alarms_whole]


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
