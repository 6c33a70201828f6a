"""Plain sentences for a model that cannot take the columns a train stage gives it.

A River pipeline made for numbers (``StandardScaler | LogisticRegression``) fails on a text
column deep inside River, with ``TypeError: unsupported operand type(s) for -: 'str' and
'float'``. A train stage tries its model on a sample of its stream when it is defined; when
that try fails, text columns were among the features, and the same try on the other columns
succeeds, the text was the cause: the stage is refused with one sentence naming the text
columns and the two ways out, instead of River's traceback.
"""

from __future__ import annotations

import copy

import pandas as pd

from fusionkit.training.protocol import Learner
from fusionkit.training.river_learner import _RiverLearner


def text_columns(X: pd.DataFrame, columns: list[str]) -> list[str]:
    """Those of ``columns`` that hold neither numbers nor booleans.

    >>> X = pd.DataFrame({"device": ["mobile"], "price": [2.0], "new": [True]})
    >>> text_columns(X, ["device", "price", "new"])
    ['device']
    """
    return [c for c in columns
            if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))]


def needs_numbers(learner: Learner, X: pd.DataFrame, y: pd.Series, error: Exception,
                  stream: str) -> str | None:
    """The sentence that explains ``error`` (raised by a copy of ``learner``, not yet
    trained, trying ``X`` and ``y``) when text columns caused it, else None: then ``error``
    is the one to show."""
    if not isinstance(error, (TypeError, ValueError)) or not isinstance(learner, _RiverLearner):
        return None
    try:
        columns = [c for c in learner._columns(X) if c != y.name]
    except Exception:
        return None
    text = text_columns(X, columns)
    numbers = [c for c in columns if c not in text]
    if not text or not numbers:
        return None
    trial = copy.deepcopy(learner)
    trial.features = numbers
    try:
        trial.predict_learn(X, y)
    except Exception:
        return None  # something else is wrong too: River's own error says what
    quoted = ", ".join(repr(c) for c in text)
    model = str(learner.model)
    model = model if len(model) <= 60 else type(learner.model).__name__
    return (f"the model {model} needs numbers, but the column(s) {quoted} of stream "
            f"{stream!r} hold text: give it numeric features with features=[...] "
            f"(--features in %%fusion train), e.g. features={numbers!r}, or add an encoder "
            f"for the text to the model, such as river.preprocessing.OneHotEncoder "
            f"(fusionkit.demo.ctr_model shows one)")
