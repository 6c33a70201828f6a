"""Prequential evaluation: live metrics from predictions made before each batch is learned.

A train stage scores every event with the model as it was before learning that event
(test-then-train), so the running metrics measure generalisation without a hold-out set.
`Prequential` keeps River metrics over all events so far and over the last ``window``
events (``river.utils.Rolling``), and turns predictions into a per-event error stream for
concept-drift detectors.

Metrics (keys of ``values()``; each also with a ``_recent`` twin over the last ``window``):

============== ==============================================================================
classification ``accuracy``; ``log_loss`` when the learner gives probabilities (binary);
               ``roc_auc`` when asked for (``roc_auc=True``)
regression     ``mae``, ``rmse``, ``r2``
============== ==============================================================================

Events without a prediction (``None``, or NaN for a regressor) are not scored, as in River's
``progressive_val_score``; a metric appears in ``values()`` once it has scored an event.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pickle
from collections import Counter
from typing import Any

import numpy as np
from river import metrics, utils

from fusionkit.training.protocol import TASKS, Prediction


class _Recent:
    """A metric over the last ``window`` events, like ``utils.Rolling(kind, window)`` but fed
    a batch at a time."""

    def __init__(self, window: int):
        self.window = window
        self.pairs: collections.deque = collections.deque()

    def _enter(self, pairs: list) -> list:
        """Add ``pairs`` (at most the last ``window``) and return those that left."""
        pairs = pairs[-self.window:]
        self.pairs.extend(pairs)
        over = len(self.pairs) - self.window
        return [self.pairs.popleft() for _ in range(over)] if over > 0 else []


class _RecentAccuracy(_Recent):
    """River's accuracy over the last ``window`` events: the pairs that leave the window are
    reverted from its confusion matrix and the new ones added, each distinct pair once."""

    def __init__(self, window: int):
        super().__init__(window)
        self.metric = metrics.Accuracy()

    def update_many(self, pairs: list) -> None:
        left = self._enter(pairs)
        for (y, p), n in Counter(left).items():
            self.metric.revert(y, p, w=n)
        for (y, p), n in Counter(pairs[-self.window:]).items():
            self.metric.update(y, p, w=n)

    def get(self) -> float:
        return self.metric.get()


class _RecentLogLoss:
    """The mean of ``metrics.LogLoss``'s per-event losses over the last ``window`` events."""

    def __init__(self, window: int):
        self.window = window
        self.losses = np.empty(0)

    def add(self, losses: np.ndarray) -> None:
        """Add the losses of a batch (from ``_log_losses``)."""
        self.losses = np.concatenate([self.losses, losses[-self.window:]])[-self.window:]

    def get(self) -> float:
        return float(self.losses.mean()) if len(self.losses) else 0.0


_RECENT = {metrics.Accuracy: _RecentAccuracy, metrics.LogLoss: _RecentLogLoss}
_BY_LOSS = (metrics.LogLoss, _RecentLogLoss)  # fed the batch's losses, not its pairs


@dataclasses.dataclass(frozen=True)
class PrimaryMetric:
    """The metric versions of a model are compared on, and which way is better.

    ``recent`` is the key of its rolling twin in ``Prequential.values()``.
    """

    name: str
    higher_is_better: bool
    recent: str


_LABEL_METRICS = {
    "classification": {"accuracy": metrics.Accuracy},
    "regression": {"mae": metrics.MAE, "rmse": metrics.RMSE, "r2": metrics.R2},
}
_PRIMARY = {
    "classification": PrimaryMetric("accuracy", True, "accuracy_recent"),
    "regression": PrimaryMetric("mae", False, "mae_recent"),
}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_list(values: Any) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _distinct(values: list) -> Any:
    try:
        return set(values)
    except TypeError:  # unhashable predictions
        return values


def _log_losses(truth: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """``metrics.LogLoss``'s loss per event (``truth``: is the positive class; ``proba``:
    its predicted probability), for a batch at once."""
    p = np.clip(proba, 1e-15, 1 - 1e-15)
    return -np.log(np.where(truth, p, 1.0 - p))


class Prequential:
    """Cumulative and rolling River metrics of a learner's test-then-train predictions.

    ``pos_label`` is the class ``Prediction.proba`` gives the probability of.

    Examples
    --------
    >>> import numpy as np
    >>> from fusionkit.training.protocol import Prediction
    >>> pq = Prequential("classification", window=2)
    >>> pq.update([True, False, True], Prediction(np.array([True, True, True]),
    ...                                           np.array([0.9, 0.6, 0.8])))
    >>> v = pq.values()
    >>> round(v["accuracy"], 3), v["accuracy_recent"], v["n"]
    (0.667, 0.5, 3)
    >>> pq.error_stream([True, False], Prediction(np.array([True, True]))).tolist()
    [0.0, 1.0]
    >>> pq.primary.name, pq.primary.higher_is_better
    ('accuracy', True)
    """

    def __init__(self, task: str = "classification", window: int = 1000,
                 pos_label: Any = True, roc_auc: bool = False):
        if task not in TASKS:
            raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.task = task
        self.window = window
        self.pos_label = pos_label
        self.roc_auc = roc_auc
        self._label_metrics = self._pairs(_LABEL_METRICS[task])
        proba = {"log_loss": metrics.LogLoss}
        if roc_auc:
            proba["roc_auc"] = metrics.ROCAUC
        self._proba_metrics = self._pairs(proba) if task == "classification" else {}
        self.n = 0
        self._n_proba = 0

    def _pairs(self, kinds: dict[str, type]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, kind in kinds.items():
            out[name] = kind()
            recent = _RECENT.get(kind)
            out[f"{name}_recent"] = (recent(self.window) if recent is not None else
                                     utils.Rolling(kind, window_size=self.window))
        return out

    @property
    def primary(self) -> PrimaryMetric:
        """Accuracy (higher is better) for classification, MAE (lower) for regression."""
        return _PRIMARY[self.task]

    def update(self, y_true: Any, prediction: Prediction) -> None:
        """Score one batch: ``y_true`` are its labels, ``prediction`` what the learner said.

        The River metrics are fed per batch where that gives the same values as feeding them
        event by event: a cumulative accuracy takes each distinct (label, prediction) pair
        once, weighted by its count; a cumulative log loss (a mean) takes the batch's losses
        at once; a rolling metric only the batch's last ``window`` events, since older ones
        would leave its window within the batch anyway. Other metrics go event by event.
        """
        ys, preds = _as_list(y_true), _as_list(prediction.y_pred)
        if len(ys) != len(preds):
            raise ValueError(f"{len(ys)} labels but {len(preds)} predictions")
        pairs = list(zip(ys, preds, strict=True))
        if any(_missing(p) for p in _distinct(preds)):
            pairs = [(y, p) for y, p in pairs if not _missing(p)]
        self._feed(self._label_metrics, pairs)
        self.n += len(pairs)
        if prediction.proba is None or not self._proba_metrics:
            return
        proba = np.asarray(prediction.proba, dtype="float64")
        known = ~np.isnan(proba)
        if len(proba) != len(ys):
            raise ValueError(f"{len(ys)} labels but {len(proba)} probabilities")
        pos = self.pos_label
        truth = np.fromiter((y == pos for y in ys), dtype=bool, count=len(ys))[known]
        proba = proba[known]
        losses = _log_losses(truth, proba)
        pairs = None
        if any(not isinstance(m, _BY_LOSS) for m in self._proba_metrics.values()):
            pairs = list(zip(truth.tolist(), proba.tolist(), strict=True))
        self._feed(self._proba_metrics, pairs, losses)
        self._n_proba += len(truth)

    def _feed(self, scored: dict[str, Any], pairs: list[tuple[Any, Any]] | None,
              losses: np.ndarray | None = None) -> None:
        if not (len(pairs) if pairs is not None else len(losses)):
            return
        counts = None
        for metric in scored.values():
            if isinstance(metric, _RecentLogLoss):
                metric.add(losses)
            elif isinstance(metric, metrics.LogLoss):
                metric._mean.update_many(losses)
            elif isinstance(metric, _Recent):
                metric.update_many(pairs)
            elif isinstance(metric, utils.Rolling):
                for y, p in pairs[-self.window:]:
                    metric.update(y, p)
            elif isinstance(metric, metrics.Accuracy):
                counts = counts if counts is not None else Counter(pairs)
                for (y, p), n in counts.items():
                    metric.update(y, p, w=n)
            else:
                for y, p in pairs:
                    metric.update(y, p)

    def values(self) -> dict[str, float]:
        """The metrics now, by name, and ``n``, the number of events scored."""
        out: dict[str, float] = {"n": self.n}
        if self.n:
            out.update({k: float(m.get()) for k, m in self._label_metrics.items()})
        if self._n_proba:
            out.update({k: float(m.get()) for k, m in self._proba_metrics.items()})
        return out

    def error_stream(self, y_true: Any, prediction: Prediction) -> np.ndarray:
        """Per-event errors for a drift detector: 0/1 misclassification or absolute error.

        NaN marks events without a prediction; drop them before feeding a detector.
        """
        ys, preds = _as_list(y_true), _as_list(prediction.y_pred)
        if len(ys) != len(preds):
            raise ValueError(f"{len(ys)} labels but {len(preds)} predictions")
        if self.task == "classification":
            errors = [math.nan if _missing(p) else float(p != y)
                      for y, p in zip(ys, preds, strict=True)]
        else:
            errors = [math.nan if _missing(p) else abs(float(y) - float(p))
                      for y, p in zip(ys, preds, strict=True)]
        return np.array(errors, dtype="float64")

    def get_state(self) -> bytes:
        """The metrics as bytes, for a checkpoint."""
        return pickle.dumps(self.__dict__, protocol=pickle.HIGHEST_PROTOCOL)

    def set_state(self, state: bytes) -> None:
        """Resume from the bytes of ``get_state``."""
        self.__dict__.clear()
        self.__dict__.update(pickle.loads(state))
