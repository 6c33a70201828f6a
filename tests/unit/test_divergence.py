"""A model whose predictions or weights are no longer finite is told apart from a sound one."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from river import linear_model, optim
from sklearn.linear_model import SGDRegressor

from fusionkit.training.divergence import divergence
from fusionkit.training.learners import adapt
from fusionkit.training.protocol import Prediction


def frame(n: int, scale: float, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    size = np.random.default_rng(seed).normal(size=n) * scale
    return pd.DataFrame({"size": size}), pd.Series(3.0 * size + 1.0, name="price")


def test_river_model_with_a_huge_step_diverges_and_a_sound_one_does_not():
    X, y = frame(200, 1e3)
    wild = adapt(linear_model.LinearRegression(optim.SGD(1e6), clip_gradient=math.inf),
                 task="regression")
    tame = adapt(linear_model.LinearRegression(optim.SGD(1e-8)), task="regression")
    assert "not finite" in divergence(wild, wild.predict_learn(X, y))
    assert "weights['size'] = nan" in divergence(wild)
    assert divergence(tame, tame.predict_learn(X, y)) is None


def test_sklearn_weights_that_overflow_are_found():
    X, y = frame(200, 1.0)
    model = adapt(SGDRegressor(), task="regression")
    model.learn(X, y)
    assert divergence(model) is None
    model.model.coef_[0] = np.inf
    assert "coef_" in divergence(model)


def test_predictions_not_yet_made_are_not_divergence():
    class Plain:
        task = "regression"

        def predict(self, X):
            return Prediction(np.array([None, 1.0], dtype=object))

    assert divergence(Plain(), Plain().predict(None)) is None
    nan = Prediction(np.array([1.0, np.nan]))
    assert "1 of 2" in divergence(Plain(), nan)
