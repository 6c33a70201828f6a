"""The adapter of River models (and plain ``learn_one``/``predict_one`` classes): looped per event.

``predict_learn`` predicts then learns each event in order, which is exactly River's
``progressive_val_score`` whatever the batch size. ``mini_batch=True`` uses
``predict_many``/``learn_many`` on the whole batch instead: faster, but every event of a
batch is then scored by the model as it was before the batch, which costs accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from river import base as river_base

from fusionkit.training.features import FeatureColumns
from fusionkit.training.protocol import Learner, Prediction

__all__ = ["SMALL_REQUEST", "as_list"]


def _argmax_predicts(model: Any) -> bool:
    """Whether ``predict_one`` is the argmax of ``predict_proba_one`` (River's default)."""
    final = getattr(model, "_last_step", model)
    return type(final).predict_one is river_base.Classifier.predict_one


def as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _to_array(values: list) -> np.ndarray:
    """Predictions as a 1-d array; object dtype when some are None."""
    if any(v is None for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)


SMALL_REQUEST = 256  # rows a mini-batch River model predicts one by one in a serve request


class _RiverLearner(FeatureColumns, Learner):
    """River models and plain ``learn_one``/``predict_one`` classes, looped per event."""

    def __init__(self, model: Any, task: str, features: list[str] | None = None,
                 label: str | None = None, pos_label: Any = True, mini_batch: bool = False):
        self.model = model
        self.task = task
        self.features = None if features is None else list(features)
        self.label = label
        self.pos_label = pos_label
        self.mini_batch = mini_batch
        self._label: str | None = None
        self._labels: dict[Any, None] = {}  # classes seen, in order (a dict pickles stably)

    def _rows(self, X: pd.DataFrame) -> list[dict]:
        cols = self._columns(X)
        data = [X[c].tolist() for c in cols]
        return [dict(zip(cols, values, strict=False)) for values in zip(*data, strict=False)]

    def _loop(self, rows: list[dict], ys: list | None) -> Prediction:
        """Predict each row, and learn it right after when labels are given."""
        if ys is not None and len(rows) != len(ys):
            raise ValueError(f"X has {len(rows)} rows but y has {len(ys)} labels")
        model, preds, probas = self.model, [], []
        proba_one = getattr(model, "predict_proba_one", None)
        if self.task != "classification":
            proba_one = None
        argmax = proba_one is not None and _argmax_predicts(model)
        predict_one, learn_one = model.predict_one, model.learn_one
        for i, x in enumerate(rows):
            if argmax:  # River's own predict_one, without transforming x twice
                p = proba_one(x)
                preds.append(max(p, key=p.get) if p else None)
            else:
                preds.append(predict_one(x))
                p = None if proba_one is None else proba_one(x)
            probas.append(p)
            if ys is not None:
                learn_one(x, ys[i])
        proba = None
        if proba_one is not None and len(self._labels) <= 2:
            pos = self.pos_label
            proba = np.array([p.get(pos, 0.0) if p else math.nan for p in probas], "float64")
        return Prediction(_to_array(preds), proba)

    def _seen(self, y: pd.Series) -> None:
        self._remember_label(y)
        if self.task == "classification":
            self._labels.update(dict.fromkeys(pd.unique(y).tolist()))

    def predict(self, X: pd.DataFrame) -> Prediction:
        return self._predict_many(X) if self.mini_batch else self._loop(self._rows(X), None)

    def predict_records(self, rows: list[dict[str, Any]]) -> Prediction:
        """River predicts dicts: a request skips building a DataFrame. A mini-batch model
        too predicts a small request row by row, with the same answers: River's
        ``predict_*_many`` go through pandas, 2.5 ms whatever the size (0.01 ms a row)."""
        if self.mini_batch and (len(rows) > SMALL_REQUEST
                                or not hasattr(self.model, "predict_one")):
            return super().predict_records(rows)
        if self.features is not None:
            rows = [{c: row[c] for c in self.features} for row in rows]
        return self._loop(rows, None)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self._seen(y)
        if self.mini_batch:
            self.model.learn_many(X[self._columns(X)], y)
            return
        learn_one = self.model.learn_one
        for x, y_true in zip(self._rows(X), as_list(y), strict=True):
            learn_one(x, y_true)

    def predict_learn(self, X: pd.DataFrame, y: pd.Series) -> Prediction:
        if self.mini_batch:
            return super().predict_learn(X, y)
        self._seen(y)
        return self._loop(self._rows(X), as_list(y))

    def _predict_many(self, X: pd.DataFrame) -> Prediction:
        Xf, model = X[self._columns(X)], self.model
        if self.task != "classification" or not hasattr(model, "predict_proba_many"):
            return Prediction(np.asarray(model.predict_many(Xf)))
        P = model.predict_proba_many(Xf)
        if P.empty:
            return Prediction(np.full(len(X), None, dtype=object))
        proba, pos = None, self.pos_label
        if P.shape[1] <= 2 and len(self._labels) <= 2:
            proba = P[pos].to_numpy("float64") if pos in P.columns else np.zeros(len(P))
        return Prediction(P.idxmax(axis="columns").to_numpy(), proba)
