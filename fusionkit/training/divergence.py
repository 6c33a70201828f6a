"""Whether a model has diverged: predictions or weights that are no longer finite.

A model like that answers NaN for every request from then on, so the train stage stops
before publishing it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fusionkit.training.protocol import Learner, Prediction

__all__ = ["divergence"]


def divergence(learner: Learner, pred: Prediction | None = None) -> str | None:
    """Why ``learner``'s model can no longer be used, or None: predictions of a regression
    that are not finite, or weights that are not (NaN or infinite: a learning rate too
    large for the data's scale). A model like that answers NaN for every request from
    then on, so the train stage stops before publishing it.

    Weights are the ``coef_``/``intercept_`` of a scikit-learn estimator and the
    ``weights``/``intercept`` of River's linear models (each step of a pipeline); other
    models are judged by their predictions only. Costs a pass over the weights per batch.

    Examples
    --------
    >>> import pandas as pd
    >>> from river import linear_model, optim
    >>> from fusionkit.training.learners import adapt
    >>> sgd = optim.SGD(1e6)  # far too large a step for values of a thousand
    >>> model = linear_model.LinearRegression(sgd, clip_gradient=math.inf)
    >>> lr = adapt(model, task="regression", features=["size"])
    >>> X = pd.DataFrame({"size": [1e3, -1e3] * 20})
    >>> y = X["size"] * 3
    >>> divergence(lr, lr.predict_learn(X[:1], y[:1])) is None
    True
    >>> divergence(lr, lr.predict_learn(X, y))
    "the model's predictions are not finite (16 of 40 are NaN or infinite)"
    >>> divergence(lr)
    "the model's weights are not finite: weights['size'] = nan"
    """
    if pred is not None and learner.task == "regression":
        values = np.asarray(pred.y_pred)
        if values.dtype == object:  # None where the model cannot predict yet
            try:
                values = np.array([v for v in values if v is not None], dtype="float64")
            except (TypeError, ValueError):
                values = values[:0].astype("float64")
        if values.dtype.kind in "fc":
            bad = ~np.isfinite(values)
            if bad.any():
                return (f"the model's predictions are not finite ({int(bad.sum())} of "
                        f"{len(values)} are NaN or infinite)")
    model = getattr(learner, "model", learner)
    steps = getattr(model, "steps", None)
    parts = list(steps.values()) if isinstance(steps, dict) else [model]
    for part in parts:
        for name in ("coef_", "intercept_", "weights", "intercept"):
            found = _not_finite(getattr(part, name, None))
            if found is not None:
                return f"the model's weights are not finite: {name}{found}"
    return None


def _not_finite(value: Any) -> str | None:
    """Where ``value`` (a number, an array, a dict of numbers) holds a non-finite number."""
    if value is None:
        return None
    if isinstance(value, dict) or hasattr(value, "items") and not hasattr(value, "shape"):
        try:
            for key, v in value.items():
                if isinstance(v, (int, float, np.number)) and not math.isfinite(float(v)):
                    return f"[{key!r}] = {float(v)}"
        except Exception:
            return None
        return None
    try:
        arr = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        return None
    bad = ~np.isfinite(arr)
    return f" ({int(bad.sum())} of {arr.size} values)" if bad.any() else None
