"""The adapter of scikit-learn estimators with ``partial_fit``: one array per batch.

A classifier needs every class on its first ``partial_fit``: pass ``classes=``; otherwise a
boolean label gives ``[False, True]`` and any other label the classes of the first batch (a
later unseen class is then an error). Before its first fit it predicts a constant (the first
class, or 0.0). Numeric and boolean columns are used as they are; other columns are one-hot
encoded with the categories of the first learned batch (unseen categories encode as zeros),
because the first fit fixes the estimator's number of inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fusionkit.errors import SchemaError
from fusionkit.training.features import FeatureColumns
from fusionkit.training.protocol import Learner, Prediction

__all__: list[str] = []


class _PartialFitLearner(FeatureColumns, Learner):
    """scikit-learn estimators with ``partial_fit``: one array per batch."""

    def __init__(self, model: Any, task: str, features: list[str] | None = None,
                 label: str | None = None, classes: list | None = None, pos_label: Any = True):
        self.model = model
        self.task = task
        self.features = None if features is None else list(features)
        self.label = label
        self.classes = None if classes is None else list(classes)
        self.pos_label = pos_label
        self._label: str | None = None
        self._classes = self.classes
        self._fitted = False
        self._numeric: list[str] = []
        self._categories: dict[str, list] = {}

    def _freeze(self, X: pd.DataFrame) -> None:
        """Fix the columns and their encoding from the first batch learned."""
        for c in self._columns(X):
            col = X[c]
            if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
                self._numeric.append(c)
            else:
                self._categories[c] = sorted(pd.unique(col.dropna()).tolist(), key=str)

    def _encode(self, X: pd.DataFrame) -> np.ndarray:
        missing = [c for c in [*self._numeric, *self._categories] if c not in X.columns]
        if missing:
            raise SchemaError(f"the batch has no feature column(s) {missing}")
        # column by column: selecting a list of columns costs ~4x as much on pandas' string
        # column index, and this runs twice per batch
        blocks = [np.column_stack([X[c].to_numpy(dtype="float64") for c in self._numeric])
                  if self._numeric else np.empty((len(X), 0))]
        for c, vocabulary in self._categories.items():
            codes = pd.Categorical(X[c], categories=vocabulary).codes
            onehot, known = np.zeros((len(X), len(vocabulary))), codes >= 0
            onehot[np.flatnonzero(known), codes[known]] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks)

    def _binary_index(self, classes: list) -> int | None:
        if len(classes) == 2 and self.pos_label in classes:
            return classes.index(self.pos_label)
        return None

    @property
    def fixed_classes(self) -> list | None:
        """The classes the estimator is bound to (given, or from the first batch), if any:
        a train stage sends events with any other label to the dead letters."""
        return self._classes

    def predict(self, X: pd.DataFrame) -> Prediction:
        n = len(X)
        if not self._fitted:
            if self.task == "regression":
                return Prediction(np.zeros(n))
            if not self._classes:
                return Prediction(np.full(n, None, dtype=object))
            half = np.full(n, 0.5) if self._binary_index(self._classes) is not None else None
            return Prediction(np.full(n, self._classes[0]), half)
        if n == 0:
            return Prediction(np.empty(0))
        A, proba = self._encode(X), None
        if self.task == "classification" and hasattr(self.model, "predict_proba"):
            index = self._binary_index(self.model.classes_.tolist())
            if index is not None:
                proba = self.model.predict_proba(A)[:, index]
        return Prediction(np.asarray(self.model.predict(A)), proba)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        if len(X) == 0:
            return
        self._remember_label(y)
        if not self._fitted:
            self._freeze(X)
        A, target = self._encode(X), y.to_numpy()
        if self.task == "regression":
            self.model.partial_fit(A, target.astype("float64"))
        else:
            if self._classes is None:
                self._classes = _infer_classes(y)
            unseen = [v for v in pd.unique(y).tolist() if v not in self._classes]
            if unseen:
                raise SchemaError(
                    f"label(s) {unseen} are not among the classes {self._classes} this "
                    "estimator started with: pass every class with adapt(model, classes=[...])")
            first = {} if self._fitted else {"classes": np.asarray(self._classes)}
            self.model.partial_fit(A, target, **first)
        self._fitted = True

    def predict_learn(self, X: pd.DataFrame, y: pd.Series) -> Prediction:
        if self.task == "classification" and self._classes is None and len(y):
            self._classes = _infer_classes(y)
        return super().predict_learn(X, y)


def _infer_classes(y: pd.Series) -> list:
    """The classes of a boolean label, or those of the first batch learned."""
    if pd.api.types.is_bool_dtype(y):
        return [False, True]
    classes = sorted(pd.unique(y).tolist())
    if len(classes) < 2:
        raise SchemaError(f"the first batch holds only the class(es) {classes}, so the classes "
                          "cannot be inferred: pass every class with adapt(model, classes=[...])")
    return classes
