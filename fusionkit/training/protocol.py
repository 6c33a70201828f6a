"""The learner protocol: predict a batch, learn a batch, state as bytes.

Every model a train stage runs speaks it (``fusionkit.training.learners.adapt`` wraps the
usual libraries). The train stage calls ``predict_learn`` on each micro-batch (prequential,
test-then-train), so every event is scored by a model that has not yet seen its label; a
version published to the registry is the bytes of ``get_state``.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import numpy as np
import pandas as pd

from fusionkit import _moved

try:  # pickles classes defined in a notebook by value, as Ray does
    import cloudpickle as _pickler
except ImportError:  # pragma: no cover
    _pickler = pickle

__all__ = ["TASKS", "Learner", "Prediction", "load_state"]

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
        other = _moved.loads(state)
        if _class_name(type(other)) != _class_name(type(self)):
            raise TypeError(f"this state holds a {_class_name(type(other))}, "
                            f"not a {_class_name(type(self))}")
        self.__dict__.clear()
        self.__dict__.update(other.__dict__)


def _class_name(cls: type) -> str:
    """A class by its module and qualified name, not by identity: a class defined in a
    notebook or a script (``__main__``) travels by value, and each process that unpickles it
    builds a class object of its own, so the learner a restarted actor builds from its spec
    and the one its checkpoint holds are of the same class under two identities."""
    return f"{cls.__module__}.{cls.__qualname__}"


def load_state(state: bytes) -> Learner:
    """Rebuild a learner from the bytes of its ``get_state`` (any adapter of ``adapt``).

    A model with its own ``get_state`` may return bytes this cannot read: restore those with
    ``set_state`` on a learner built from the same model.
    """
    obj = _moved.loads(state)
    if isinstance(obj, Learner):
        return obj
    raise TypeError(f"these bytes hold a {type(obj).__name__}, not a fusionkit Learner: call "
                    "set_state on a learner built from the same model instead")
