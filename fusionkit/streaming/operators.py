"""Stateless operators of a stream stage (map, filter, key_by) and the partitioning by key.

Each works on a whole batch (a DataFrame) with vectorized user functions. Keys are hashed
with pandas' stable hash, so a key lands on the same parallel actor in every process.
State kept per key is :mod:`fusionkit.streaming.keyed`; operators run in a
:mod:`fusionkit.streaming.chain`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._suggest import did_you_mean
from fusionkit.batch import RESERVED
from fusionkit.streaming.base import Operator

__all__ = ["KEY", "Filter", "KeyBy", "Map", "key_hash", "partition"]

KEY = "_key"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _user_columns(batch: pd.DataFrame) -> list[str]:
    return [c for c in batch.columns if not str(c).startswith("_")]


class Map(Operator):
    """Apply a vectorized user function ``fn(DataFrame) -> DataFrame`` to each batch.

    Reserved columns (``_event_time``, ``_ingest_ts``, ``_offset``) that ``fn`` drops are put
    back when its result keeps the batch's rows (same index, or same length with a fresh
    index), so the user's function may return only the features it computes.

    Examples
    --------
    >>> df = pd.DataFrame({"x": [1, 2], "_offset": [0, 1]})
    >>> Map(lambda d: d[["x"]] * 10).process(df).to_dict("list")
    {'x': [10, 20], '_offset': [0, 1]}
    """

    def __init__(self, fn: Callable[[pd.DataFrame], pd.DataFrame]):
        self.fn = fn

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.fn(batch)
        if out is None:
            raise TypeError(f"the stream function {_name(self.fn)}() returned None; it must "
                            "return a DataFrame (did you forget `return df`?)")
        if isinstance(out, pd.Series):
            out = out.to_frame()
        if not isinstance(out, pd.DataFrame):
            raise TypeError(f"the stream function {_name(self.fn)}() returned a "
                            f"{type(out).__name__}; it must return a DataFrame")
        missing = [c for c in RESERVED if c in batch.columns and c not in out.columns]
        if not missing:
            return out
        if out.index.equals(batch.index) or (
                len(out) == len(batch) and isinstance(out.index, pd.RangeIndex)
                and out.index.start == 0 and out.index.step == 1):
            return out.assign(**{c: batch[c].to_numpy() for c in missing})
        if batch.index.is_unique and out.index.isin(batch.index).all():
            rows = batch.index.get_indexer(out.index)
            return out.assign(**{c: batch[c].to_numpy()[rows] for c in missing})
        raise ValueError(f"the stream function {_name(self.fn)}() dropped the reserved columns "
                         f"{missing} and changed the rows, so they cannot be put back; keep "
                         "them in its result")


class Filter(Operator):
    """Keep the events for which ``predicate(DataFrame)`` is true, or that match a query string.

    ``predicate`` returns one boolean per event (a Series or an array); missing values count
    as false. A string is passed to :meth:`pandas.DataFrame.query`.

    Examples
    --------
    >>> df = pd.DataFrame({"x": [1, 5, 3]})
    >>> Filter("x > 2").process(df)["x"].tolist()
    [5, 3]
    >>> Filter(lambda d: d["x"] % 2 == 1).process(df)["x"].tolist()
    [1, 5, 3]
    """

    def __init__(self, predicate: Callable[[pd.DataFrame], Any] | str):
        self.predicate = predicate

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if isinstance(self.predicate, str):
            return batch.query(self.predicate)
        mask = self.predicate(batch)
        if isinstance(mask, (pd.Series, pd.api.extensions.ExtensionArray)) \
                and pd.api.types.is_bool_dtype(mask.dtype):
            mask = mask.to_numpy(dtype=bool, na_value=False)
        mask = np.asarray(mask)
        if mask.dtype == object and all(isinstance(m, (bool, np.bool_)) or m is None
                                        or m is pd.NA for m in mask.ravel()[:len(batch)]):
            mask = pd.array(mask, dtype="boolean").to_numpy(dtype=bool, na_value=False)
        if mask.dtype != bool or mask.shape != (len(batch),):
            raise TypeError(f"the filter {_name(self.predicate)}() must return one boolean per "
                            f"event ({len(batch)}), got {mask.dtype} values of shape "
                            f"{mask.shape}")
        return batch[mask]


class KeyBy(Operator):
    """Give each event a key in the ``_key`` column: a column's value, or ``key(DataFrame)``.

    The key decides which parallel actor gets the event (see :func:`partition`) and groups
    keyed state.

    Examples
    --------
    >>> df = pd.DataFrame({"user": ["a", "b"], "x": [1, 2]})
    >>> KeyBy("user").process(df)["_key"].tolist()
    ['a', 'b']
    >>> KeyBy(lambda d: d["x"] % 2).process(df)["_key"].tolist()
    [1, 0]
    """

    def __init__(self, key: str | Callable[[pd.DataFrame], Any]):
        self.key = key

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if isinstance(self.key, str):
            if self.key not in batch.columns:
                hint = did_you_mean(self.key, batch.columns, "; did you mean {!r}?")
                raise KeyError(f"key_by column {self.key!r} is not in the batch; columns are "
                               f"{_user_columns(batch)}{hint}")
            return batch.assign(**{KEY: batch[self.key].to_numpy()})
        keys = self.key(batch)
        keys = keys.to_numpy() if isinstance(keys, (pd.Series, pd.Index)) else np.asarray(keys)
        if keys.shape != (len(batch),):
            raise ValueError(f"the key function {_name(self.key)}() must return one key per "
                             f"event ({len(batch)}), got shape {keys.shape}")
        return batch.assign(**{KEY: keys})


def key_hash(keys: pd.Series | np.ndarray | list) -> np.ndarray:
    """A stable 64-bit hash per key: the same in every process, whatever ``PYTHONHASHSEED``.

    Examples
    --------
    >>> key_hash(["a", "b"]).tolist() == key_hash(pd.Series(["a", "b"])).tolist()
    True
    """
    series = keys if isinstance(keys, pd.Series) else pd.Series(keys)
    return pd.util.hash_pandas_object(series, index=False).to_numpy()


def partition(batch: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """Split a batch into ``n`` parts by a stable hash of ``_key``; each part keeps its order.

    Every event of a key lands in the same part, in every process.

    Examples
    --------
    >>> df = pd.DataFrame({"_key": ["a", "b", "a", "c"], "v": [1, 2, 3, 4]})
    >>> [p["v"].tolist() for p in partition(df, 2)]
    [[1, 3, 4], [2]]
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if n == 1:
        return [batch]
    if KEY not in batch.columns:
        raise KeyError("partition needs a `_key` column: add key_by to the stream")
    part = (key_hash(batch[KEY]) % np.uint64(n)).astype(np.int64)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(n + 1))
    ordered = batch.take(order)
    return [ordered.iloc[bounds[i]:bounds[i + 1]] for i in range(n)]
