"""The data unit: a micro-batch is a pandas DataFrame of events plus reserved columns.

============== ==================================================================
``_event_time`` the event's own timestamp, seconds (from the data or ingest time)
``_ingest_ts``  wall-clock seconds when the source emitted the event
``_offset``     the source position, so a batch can be replayed after a failure
============== ==================================================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd

EVENT_TIME = "_event_time"
INGEST_TS = "_ingest_ts"
OFFSET = "_offset"
RESERVED = (EVENT_TIME, INGEST_TS, OFFSET)


def feature_columns(batch: pd.DataFrame, exclude: tuple[str, ...] = ()) -> list[str]:
    """The user's columns of a batch: everything but the reserved ones and ``exclude``."""
    skip = set(RESERVED) | set(exclude)
    return [c for c in batch.columns if c not in skip and not str(c).startswith("_")]


def empty_like(batch: pd.DataFrame) -> pd.DataFrame:
    """A batch with the same columns and no rows."""
    return batch.iloc[0:0]


def stamp(batch: pd.DataFrame, ingest_ts: float) -> pd.DataFrame:
    """Set ``_ingest_ts`` on every row (the source does this when it emits)."""
    batch[INGEST_TS] = np.full(len(batch), ingest_ts, dtype="float64")
    return batch
