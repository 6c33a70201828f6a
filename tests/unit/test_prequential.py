"""Prequential metrics: River metrics fed batch by batch, rolling windows, error streams."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics, utils

from fusionkit.training.prequential import Prequential, PrimaryMetric
from fusionkit.training.protocol import Prediction


def classification_stream(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    proba = np.clip(np.where(y, 0.7, 0.3) + rng.normal(scale=0.25, size=n), 0.0, 1.0)
    return y, proba > 0.5, proba


def feed(pq: Prequential, y, y_pred, proba=None, size: int = 250) -> None:
    for lo in range(0, len(y), size):
        part = None if proba is None else proba[lo:lo + size]
        pq.update(y[lo:lo + size], Prediction(y_pred[lo:lo + size], part))


def river_value(kind, y, y_pred, window=None, **kwargs) -> float:
    metric = kind(**kwargs) if window is None else utils.Rolling(kind, window_size=window,
                                                                 **kwargs)
    for yt, yp in zip(y, y_pred, strict=True):
        metric.update(yt, yp)
    return metric.get()


def test_classification_values_match_river():
    y, y_pred, proba = classification_stream()
    pq = Prequential("classification", window=500, roc_auc=True)
    feed(pq, y, y_pred, proba)
    ys, ps, qs = y.tolist(), y_pred.tolist(), proba.tolist()
    values = pq.values()
    assert values["n"] == len(y)
    assert values["accuracy"] == pytest.approx(river_value(metrics.Accuracy, ys, ps))
    assert values["accuracy"] == pytest.approx(float((y == y_pred).mean()))
    assert values["accuracy_recent"] == pytest.approx(
        river_value(metrics.Accuracy, ys, ps, window=500))
    assert values["accuracy_recent"] == pytest.approx(float((y == y_pred)[-500:].mean()))
    assert values["log_loss"] == pytest.approx(river_value(metrics.LogLoss, ys, qs))
    assert values["log_loss_recent"] == pytest.approx(
        river_value(metrics.LogLoss, ys, qs, window=500))
    assert values["roc_auc"] == pytest.approx(river_value(metrics.ROCAUC, ys, qs))
    assert values["roc_auc_recent"] == pytest.approx(
        river_value(metrics.ROCAUC, ys, qs, window=500))


@pytest.mark.parametrize("size", [1, 299, 300, 301, 1000])
def test_batches_larger_than_the_window_and_unscored_events_match_river(size):
    """Metrics are fed a batch at a time (weighted accuracy pairs, a batch of losses, only
    the last ``window`` events for the recent twins): the values are River's, event by event."""
    y, y_pred, proba = classification_stream(2500, seed=7)
    y_pred = y_pred.astype(object)
    y_pred[::11] = None  # not scored, as in progressive_val_score
    proba[::13] = math.nan
    pq = Prequential("classification", window=300)
    feed(pq, y, y_pred, proba, size=size)
    scored = [i for i, p in enumerate(y_pred) if p is not None]
    ys, ps = [bool(y[i]) for i in scored], [bool(y_pred[i]) for i in scored]
    with_p = [i for i in range(len(y)) if not math.isnan(proba[i])]
    yq, qs = [bool(y[i]) for i in with_p], [float(proba[i]) for i in with_p]
    values = pq.values()
    assert values["n"] == len(scored)
    assert values["accuracy"] == river_value(metrics.Accuracy, ys, ps)
    assert values["accuracy_recent"] == pytest.approx(
        river_value(metrics.Accuracy, ys, ps, window=300), abs=1e-12)
    assert values["log_loss"] == pytest.approx(river_value(metrics.LogLoss, yq, qs), rel=1e-9)
    assert values["log_loss_recent"] == pytest.approx(
        river_value(metrics.LogLoss, yq, qs, window=300), rel=1e-9)


def test_regression_values_match_river():
    rng = np.random.default_rng(3)
    y = rng.normal(size=2000)
    y_pred = y + rng.normal(scale=0.3, size=2000)
    pq = Prequential("regression", window=300)
    feed(pq, y, y_pred, size=128)
    values = pq.values()
    ys, ps = y.tolist(), y_pred.tolist()
    assert set(values) == {"n", "mae", "mae_recent", "rmse", "rmse_recent", "r2", "r2_recent"}
    for name, kind in (("mae", metrics.MAE), ("rmse", metrics.RMSE), ("r2", metrics.R2)):
        assert values[name] == pytest.approx(river_value(kind, ys, ps))
        assert values[f"{name}_recent"] == pytest.approx(river_value(kind, ys, ps, window=300))
    assert values["mae"] == pytest.approx(float(np.abs(y - y_pred).mean()))


def test_missing_predictions_and_probabilities_are_not_scored():
    pq = Prequential("classification")
    y_pred = np.array([None, True, False, None], dtype=object)
    pq.update([True, True, True, False], Prediction(y_pred, np.array([math.nan, 0.8, 0.4,
                                                                      math.nan])))
    values = pq.values()
    assert values["n"] == 2
    assert values["accuracy"] == pytest.approx(0.5)
    assert values["log_loss"] == pytest.approx(river_value(metrics.LogLoss, [True, True],
                                                           [0.8, 0.4]))
    errors = pq.error_stream([True, True, True, False], Prediction(y_pred))
    assert np.isnan(errors[[0, 3]]).all() and errors[[1, 2]].tolist() == [0.0, 1.0]


def test_values_before_any_event_and_without_proba():
    pq = Prequential("classification")
    assert pq.values() == {"n": 0}
    pq.update([True, False], Prediction(np.array([True, True])))
    assert set(pq.values()) == {"n", "accuracy", "accuracy_recent"}


def test_string_labels_with_a_positive_label():
    pq = Prequential("classification", pos_label="phish")
    y = ["phish", "ok", "phish", "ok"]
    pq.update(y, Prediction(np.array(["phish", "ok", "ok", "ok"]), np.array([0.9, 0.2, 0.4,
                                                                             0.1])))
    assert pq.values()["accuracy"] == pytest.approx(0.75)
    expected = river_value(metrics.LogLoss, [True, False, True, False], [0.9, 0.2, 0.4, 0.1])
    assert pq.values()["log_loss"] == pytest.approx(expected)


def test_error_stream():
    y, y_pred, _ = classification_stream(500)
    pq = Prequential("classification")
    errors = pq.error_stream(y, Prediction(y_pred))
    assert errors.dtype == np.float64 and set(errors.tolist()) <= {0.0, 1.0}
    pq.update(y, Prediction(y_pred))
    assert errors.mean() == pytest.approx(1 - pq.values()["accuracy"])
    reg = Prequential("regression")
    assert reg.error_stream(np.array([1.0, 2.0]), Prediction(np.array([1.5, 0.0]))).tolist() \
        == [0.5, 2.0]
    with pytest.raises(ValueError, match="2 labels but 3"):
        reg.error_stream([1.0, 2.0], Prediction(np.zeros(3)))
    with pytest.raises(ValueError, match="2 labels but 3"):
        reg.update([1.0, 2.0], Prediction(np.zeros(3)))


def test_primary_metric():
    assert Prequential("classification").primary == PrimaryMetric("accuracy", True,
                                                                  "accuracy_recent")
    assert Prequential("regression").primary == PrimaryMetric("mae", False, "mae_recent")
    pq = Prequential("regression")
    pq.update([1.0], Prediction(np.array([2.0])))
    assert pq.primary.name in pq.values() and pq.primary.recent in pq.values()


def test_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        Prequential("ranking")
    with pytest.raises(ValueError, match="window"):
        Prequential("classification", window=0)


def test_state_round_trip():
    y, y_pred, proba = classification_stream(2000)
    pq = Prequential("classification", window=300)
    feed(pq, y[:1000], y_pred[:1000], proba[:1000])
    restored = Prequential("classification")
    restored.set_state(pq.get_state())
    assert restored.values() == pq.values() and restored.window == 300
    for metrics_ in (pq, restored):
        feed(metrics_, y[1000:], y_pred[1000:], proba[1000:])
    assert restored.values() == pq.values()
    whole = Prequential("classification", window=300)
    feed(whole, y, y_pred, proba)
    assert whole.values() == pytest.approx(pq.values())


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.booleans(), st.booleans(), st.floats(0.0, 1.0)), max_size=120),
    size=st.integers(1, 50),
    window=st.integers(1, 40),
)
def test_batching_does_not_change_values(pairs, size, window):
    y = np.array([p[0] for p in pairs], dtype=bool)
    y_pred = np.array([p[1] for p in pairs], dtype=bool)
    proba = np.array([p[2] for p in pairs], dtype="float64")
    by_batch, one_by_one = Prequential(window=window), Prequential(window=window)
    feed(by_batch, y, y_pred, proba, size=size)
    feed(one_by_one, y, y_pred, proba, size=1)
    assert by_batch.values() == pytest.approx(one_by_one.values())
    if pairs:  # the rolling accuracy is the accuracy of the last `window` events
        recent = (y == y_pred)[-window:].mean()
        assert by_batch.values()["accuracy_recent"] == pytest.approx(recent)
