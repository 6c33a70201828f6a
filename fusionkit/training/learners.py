"""Learners: one small protocol for every model a train stage runs, and the adapters to it.

A learner predicts a batch, learns a batch, and hands its state out and back in as bytes. The
train stage calls ``predict_learn`` on each micro-batch (prequential, test-then-train), so
every event is scored by a model that has not yet seen its label.

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

import dataclasses
import math
import pickle
from typing import Any

import numpy as np
import pandas as pd
from river import base as river_base

from fusionkit.batch import model_features
from fusionkit.errors import SchemaError

try:  # pickles classes defined in a notebook by value, as Ray does
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover
    _pickler = pickle

TASKS = ("classification", "regression")


@dataclasses.dataclass(frozen=True, eq=False)
class Prediction:
    """The answers of a learner for one batch, in the batch's row order.

    ``y_pred`` holds one prediction per row (``None`` where the model cannot predict yet);
    ``proba`` is P(class = positive label) per row for a binary classifier (NaN where
    unknown), or None when the model gives no probabilities or has more than two classes.

    Examples
    --------
    >>> import numpy as np
    >>> p = Prediction(np.array([True, False]), np.array([0.9, 0.2]))
    >>> len(p), p.y_pred.tolist()
    (2, [True, False])
    """

    y_pred: np.ndarray
    proba: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y_pred)


class Learner:
    """The protocol of a model in a train stage: predict a batch, learn a batch, state.

    Subclass it (or write any class with these methods) to bring your own model; ``adapt``
    wraps the usual libraries. ``model`` is the wrapped object, ``task`` is
    ``"classification"`` or ``"regression"``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> class Mean(Learner):
    ...     task = "regression"
    ...     def __init__(self):
    ...         self.model = []
    ...     def predict(self, X):
    ...         return Prediction(np.full(len(X), np.mean(self.model) if self.model else 0.0))
    ...     def learn(self, X, y):
    ...         self.model.extend(y.tolist())
    >>> learner, X = Mean(), pd.DataFrame({"a": [1, 2]})
    >>> learner.predict_learn(X, pd.Series([2.0, 4.0])).y_pred.tolist()
    [0.0, 0.0]
    >>> learner.predict(X).y_pred.tolist()
    [3.0, 3.0]
    """

    task: str = "classification"
    model: Any = None

    def predict(self, X: pd.DataFrame) -> Prediction:
        """Predict every row of ``X`` without learning."""
        raise NotImplementedError

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        """Learn every row of ``X`` with its label in ``y``."""
        raise NotImplementedError

    def predict_learn(self, X: pd.DataFrame, y: pd.Series) -> Prediction:
        """Test then train: predict the batch, then learn it (prequential evaluation)."""
        prediction = self.predict(X)
        self.learn(X, y)
        return prediction

    def predict_records(self, rows: list[dict[str, Any]]) -> Prediction:
        """Predict rows given as dicts of features (a serve request); same answers as
        ``predict`` on their DataFrame, which is what this default builds."""
        return self.predict(pd.DataFrame.from_records(rows))

    def get_state(self) -> bytes:
        """The learner as bytes, for a checkpoint or a published version (sha256-able).

        The same state gives the same bytes, and a learner restored by ``set_state`` gives
        back the bytes it was restored from. Pickle also records which objects are shared,
        which differs between a restored learner and one that never was; pickling the
        unpickled copy removes the differences in shared strings, so a restored River model
        that goes on learning checksums like one never restored (numpy arrays may still
        differ in layout while equal in value).
        """
        once = _pickler.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)
        return _pickler.dumps(pickle.loads(once), protocol=pickle.HIGHEST_PROTOCOL)

    def set_state(self, state: bytes) -> None:
        """Become the learner whose ``get_state`` returned ``state``."""
        other = pickle.loads(state)
        if type(other) is not type(self):
            raise TypeError(f"this state holds a {type(other).__name__}, "
                            f"not a {type(self).__name__}")
        self.__dict__.clear()
        self.__dict__.update(other.__dict__)


def load_state(state: bytes) -> Learner:
    """Rebuild a learner from the bytes of its ``get_state`` (any adapter of ``adapt``).

    A model with its own ``get_state`` may return bytes this cannot read: restore those with
    ``set_state`` on a learner built from the same model.
    """
    obj = pickle.loads(state)
    if isinstance(obj, Learner):
        return obj
    raise TypeError(f"these bytes hold a {type(obj).__name__}, not a fusionkit Learner: call "
                    "set_state on a learner built from the same model instead")


class _Columns:
    """Feature selection shared by the adapters."""

    features: list[str] | None
    label: str | None
    _label: str | None

    def _remember_label(self, y: pd.Series) -> None:
        if self.label is None and self._label is None and y.name is not None:
            self._label = str(y.name)

    def _columns(self, X: pd.DataFrame) -> list[str]:
        if self.features is not None:
            missing = [c for c in self.features if c not in X.columns]
            if missing:
                raise SchemaError(f"the batch has no feature column(s) {missing}")
            return list(self.features)
        label = self.label if self.label is not None else self._label
        return model_features(X, label)


def _argmax_predicts(model: Any) -> bool:
    """Whether ``predict_one`` is the argmax of ``predict_proba_one`` (River's default)."""
    final = getattr(model, "_last_step", model)
    return type(final).predict_one is river_base.Classifier.predict_one


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _to_array(values: list) -> np.ndarray:
    """Predictions as a 1-d array; object dtype when some are None."""
    if any(v is None for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)


SMALL_REQUEST = 256  # rows a mini-batch River model predicts one by one in a serve request


class _RiverLearner(_Columns, Learner):
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
        for x, y_true in zip(self._rows(X), _as_list(y), strict=True):
            learn_one(x, y_true)

    def predict_learn(self, X: pd.DataFrame, y: pd.Series) -> Prediction:
        if self.mini_batch:
            return super().predict_learn(X, y)
        self._seen(y)
        return self._loop(self._rows(X), _as_list(y))

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


class _PartialFitLearner(_Columns, Learner):
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
    >>> from river import linear_model, optim
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
