"""Learners: ``adapt`` turns a model into the learner protocol (``training/protocol.py``).

A learner predicts a batch, learns a batch, and hands its state out and back in as bytes.

``adapt(model)`` turns what a user writes in a notebook into a `Learner`:

- a River model or pipeline (classifier or regressor): rows go in as dicts, and
  ``predict_learn`` predicts then learns each event in order, which is exactly River's
  ``progressive_val_score`` whatever the batch size. ``mini_batch=True`` uses
  ``predict_many``/``learn_many`` on the whole batch instead: faster, but every event of a
  batch is then scored by the model as it was before the batch, which costs accuracy.
- a scikit-learn estimator with ``partial_fit``: the batch is predicted, then learned, as one
  array. A classifier needs every class on its first ``partial_fit``: pass ``classes=``;
  otherwise a boolean label gives ``[False, True]`` and any other label the classes of the
  first batch (a later unseen class is then an error). Before its first fit it predicts a
  constant (the first class, or 0.0). Numeric and boolean columns are used as they are;
  other columns are one-hot encoded with the categories of the first learned batch (unseen
  categories encode as zeros), because the first fit fixes the estimator's number of inputs.
- an object with ``learn_one`` and ``predict_one`` that is not River: looped like River.
- an object with ``predict``, ``learn``, ``get_state`` and ``set_state``: used as it is.

Features are ``features`` when given, else every column of the batch but the reserved ones
(``fusionkit.batch``), the label (``label``, or the name of the ``y`` series learned) and
the columns named like ids (``user_id``, ``id``, ``userId``): ``fusionkit.batch.model_features``
says why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from river import base as river_base

from fusionkit.training.partial_fit_learner import _PartialFitLearner
from fusionkit.training.protocol import TASKS, Learner, Prediction
from fusionkit.training.river_learner import _RiverLearner

__all__ = ["adapt", "fresh_learner"]


class _WrappedLearner(Learner):
    """An object that speaks the protocol without subclassing `Learner`."""

    def __init__(self, model: Any, task: str):
        self.model = model
        self.task = task

    def predict(self, X: pd.DataFrame) -> Prediction:
        return _as_prediction(self.model.predict(X))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self.model.learn(X, y)

    def predict_learn(self, X: pd.DataFrame, y: pd.Series) -> Prediction:
        if callable(getattr(self.model, "predict_learn", None)):
            return _as_prediction(self.model.predict_learn(X, y))
        return super().predict_learn(X, y)

    def get_state(self) -> bytes:
        return self.model.get_state()

    def set_state(self, state: bytes) -> None:
        self.model.set_state(state)


def _as_prediction(result: Any) -> Prediction:
    return result if isinstance(result, Prediction) else Prediction(np.asarray(result))


def _has(model: Any, *methods: str) -> bool:
    return all(callable(getattr(model, m, None)) for m in methods)


def _sklearn_task(model: Any) -> str | None:
    try:
        from sklearn.base import is_classifier, is_regressor
    except ImportError:  # pragma: no cover
        return None
    if is_classifier(model):
        return "classification"
    return "regression" if is_regressor(model) else None


def _resolve(task: str | None, found: str | None, what: str) -> str:
    if task is None and found is None:
        raise ValueError(f"cannot tell whether {what} classifies or regresses: pass task=")
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
    if task is not None and found is not None and found != task:
        raise ValueError(f"{what} is a {found} model, but task={task!r} was given")
    return task or found


def fresh_learner(spec: Any) -> Learner:
    """The learner a train stage's spec builds (a copy of its model, adapted with its
    options), as when the stage was defined: for a start, a reset or a rollback to nothing."""
    import copy

    return adapt(copy.deepcopy(spec.model), features=spec.features, **spec.learner_options)


def adapt(model: Any, task: str | None = None, *, features: list[str] | None = None,
          label: str | None = None, classes: list | None = None, pos_label: Any = True,
          mini_batch: bool = False) -> Learner:
    """Wrap ``model`` in the learner protocol (the module docstring lists what is accepted).

    ``task`` is found from the model when it can be; ``features`` and ``label`` pick the
    columns; ``classes`` lists a scikit-learn classifier's classes up front; ``pos_label`` is
    the class whose probability ``Prediction.proba`` holds; ``mini_batch=True`` makes a River
    model learn and predict whole batches with ``learn_many``/``predict_many``.

    Examples
    --------
    >>> import pandas as pd
    >>> from river import linear_model, preprocessing
    >>> learner = adapt(preprocessing.StandardScaler() | linear_model.LogisticRegression())
    >>> learner.task
    'classification'
    >>> X = pd.DataFrame({"x": [1.0, -1.0, 2.0], "label": [True, False, True]})
    >>> learner.predict_learn(X, X["label"]).y_pred.tolist()
    [False, True, True]
    >>> adapt(object())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: fusionkit cannot train object: ...
    """
    if isinstance(model, Learner):
        return model
    name = type(model).__name__
    if isinstance(model, river_base.Estimator):
        found = ("classification" if isinstance(model, river_base.Classifier) else
                 "regression" if isinstance(model, river_base.Regressor) else None)
        if found is None:
            raise TypeError(f"the River model {name} neither classifies nor regresses: end "
                            "the pipeline with a classifier or a regressor")
        if mini_batch and not _has(model, "learn_many", "predict_many"):
            raise TypeError(f"the River model {name} has no learn_many: use mini_batch=False")
        return _RiverLearner(model, _resolve(task, found, name), features, label, pos_label,
                             mini_batch)
    if _has(model, "predict", "learn", "get_state", "set_state"):
        return _WrappedLearner(model, _resolve(task, getattr(model, "task", None), name))
    if _has(model, "partial_fit", "predict"):
        return _PartialFitLearner(model, _resolve(task, _sklearn_task(model), name), features,
                                  label, classes, pos_label)
    if _has(model, "learn_one", "predict_one"):
        found = getattr(model, "task", None)
        if found is None and _has(model, "predict_proba_one"):
            found = "classification"
        return _RiverLearner(model, _resolve(task, found, name), features, label, pos_label)
    raise TypeError(
        f"fusionkit cannot train {name}: pass a River model or pipeline, a scikit-learn "
        "estimator with partial_fit, an object with learn_one and predict_one, or an object "
        "with predict, learn, get_state and set_state (a fusionkit Learner)")
