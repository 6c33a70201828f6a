"""The data unit: a micro-batch is a pandas DataFrame of events plus reserved columns.

============== ==================================================================
``_event_time`` the event's own timestamp, seconds (from the data or ingest time)
``_ingest_ts``  wall-clock seconds when the source emitted the event
``_offset``     the source position, so a batch can be replayed after a failure
============== ==================================================================
"""

from __future__ import annotations

import re

import pandas as pd

EVENT_TIME = "_event_time"
INGEST_TS = "_ingest_ts"
OFFSET = "_offset"
RESERVED = (EVENT_TIME, INGEST_TS, OFFSET)


def feature_columns(batch: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """The user's columns of a batch: everything but the reserved ones and ``exclude``."""
    skip = set(RESERVED) | set(exclude)
    return [c for c in batch.columns if c not in skip and not str(c).startswith("_")]


_ID_NAME = re.compile(r"(?:^|[_\-. ])(?:id|uuid|guid)$", re.IGNORECASE)  # id, user_id, order-uuid
_CAMEL_ID = re.compile(r"[a-z0-9](?:Id|ID|Uuid|UUID|Guid|GUID)$")  # userId, sessionUUID


def is_id_column(name: object) -> bool:
    """Whether a column's name says it identifies something rather than describes it.

    >>> [c for c in ["id", "user_id", "userId", "order-uuid", "paid", "video", "width"]
    ...  if is_id_column(c)]
    ['id', 'user_id', 'userId', 'order-uuid']
    """
    name = str(name)
    return bool(_ID_NAME.search(name) or _CAMEL_ID.search(name))


def model_features(batch: pd.DataFrame, label: str | None = None) -> list[str]:
    """The columns a model learns from when it is not given ``features``: the user's columns
    (``feature_columns``) but the label and those named like ids (``is_id_column``).

    An id names an entity instead of describing it: as a number a model weighs its
    magnitude, which means nothing; as a category it is one weight per user that never
    generalizes to the next user and grows with the stream. Text columns are kept: an
    encoder in the model (River's ``OneHotEncoder``, the scikit-learn adapter's one-hot)
    makes use of them, and a model that needs numbers says so when the stage is defined.

    >>> df = pd.DataFrame({"user_id": [7], "device": ["mobile"], "price": [2.0],
    ...                    "clicked": [True], "_offset": [0]})
    >>> model_features(df, label="clicked")
    ['device', 'price']
    """
    exclude = (label,) if label is not None else ()
    return [c for c in feature_columns(batch, exclude=exclude) if not is_id_column(c)]


def coalesce(batches: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Consecutive batches with the same columns (names and dtypes) as one batch each, in
    order; a batch whose columns differ from the one before starts a new one.

    >>> a, b = pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]})
    >>> [len(p) for p in coalesce([a, b, pd.DataFrame({"y": [0.5]}), a])]
    [3, 1, 2]
    >>> coalesce([a, b])[0].index.tolist()
    [0, 1, 2]
    """
    runs: list[list[pd.DataFrame]] = []
    for batch in batches:
        if runs and _same_columns(runs[-1][-1], batch):
            runs[-1].append(batch)
        else:
            runs.append([batch])
    return [run[0] if len(run) == 1 else pd.concat(run, ignore_index=True) for run in runs]


def _same_columns(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    return a.columns.equals(b.columns) and a.dtypes.equals(b.dtypes)
