"""Stateless and keyed operators of a stream stage: map, filter, key_by, keyed state, chains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit.batch import RESERVED
from fusionkit.streaming.base import Operator

KEY = "_key"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class Map(Operator):
    """Apply a vectorized user function ``fn(DataFrame) -> DataFrame`` to each batch.

    Reserved columns the function drops are put back when it keeps the rows.

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
            raise TypeError(f"the stream function {_name(self.fn)}() returned None: it must "
                            "return a DataFrame (did you forget `return df`?)")
        if isinstance(out, pd.Series):
            out = out.to_frame()
        if not isinstance(out, pd.DataFrame):
            raise TypeError(f"the stream function {_name(self.fn)}() returned a "
                            f"{type(out).__name__}; it must return a DataFrame")
        missing = [c for c in RESERVED if c in batch.columns and c not in out.columns]
        if missing and out.index.isin(batch.index).all():
            out = out.copy()
            for c in missing:
                out[c] = batch.loc[out.index, c]
        return out


class Filter(Operator):
    """Keep the events for which ``predicate(DataFrame)`` is true (or a ``query`` string).

    Examples
    --------
    >>> df = pd.DataFrame({"x": [1, 5, 3]})
    >>> Filter("x > 2").process(df)["x"].tolist()
    [5, 3]
    """

    def __init__(self, predicate: Callable[[pd.DataFrame], Any] | str):
        self.predicate = predicate

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if isinstance(self.predicate, str):
            return batch.query(self.predicate)
        mask = self.predicate(batch)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(batch),):
            raise ValueError(f"the filter {_name(self.predicate)}() must return one boolean per "
                             f"event ({len(batch)}), got shape {mask.shape}")
        return batch[mask]


class KeyBy(Operator):
    """Give each event a key (a column, or a function of the batch) in the ``_key`` column."""

    def __init__(self, key: str | Callable[[pd.DataFrame], Any]):
        self.key = key

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if isinstance(self.key, str):
            if self.key not in batch.columns:
                raise KeyError(f"key_by column {self.key!r} is not in the batch; columns are "
                               f"{[c for c in batch.columns if not str(c).startswith('_')]}")
            return batch.assign(**{KEY: batch[self.key].to_numpy()})
        return batch.assign(**{KEY: np.asarray(self.key(batch))})


def key_hash(keys: pd.Series | np.ndarray) -> np.ndarray:
    """A stable 64-bit hash per key: the same in every process, whatever PYTHONHASHSEED."""
    return pd.util.hash_array(np.asarray(keys, dtype=object) if not isinstance(keys, np.ndarray)
                              or keys.dtype.kind == "O" else keys, categorize=False)


def partition(batch: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    """Split a keyed batch into ``n`` parts by a stable hash of ``_key``; order is kept.

    Examples
    --------
    >>> df = pd.DataFrame({"_key": ["a", "b", "a", "c"], "v": [1, 2, 3, 4]})
    >>> parts = partition(df, 2)
    >>> sum(len(p) for p in parts), all(p["_key"].nunique() == len(set(p["_key"])) for p in parts)
    (4, True)
    """
    if n == 1:
        return [batch]
    if KEY not in batch.columns:
        raise KeyError("partition needs a `_key` column: add key_by to the stream")
    part = key_hash(batch[KEY].to_numpy()) % np.uint64(n)
    return [batch[part == i] for i in range(n)]


class KeyedState(Operator):
    """Keep state per key across batches: ``fn(key, events_of_key, state) -> DataFrame | None``.

    ``state`` is the mutable object ``initial()`` made for that key the first time it was seen.

    Examples
    --------
    >>> def running(key, df, state):
    ...     state["n"] = state.get("n", 0) + len(df)
    ...     return pd.DataFrame({"user": [key], "seen": [state["n"]]})
    >>> op = KeyedState(running, key="user")
    >>> op.process(pd.DataFrame({"user": ["a", "b", "a"]})).to_dict("list")
    {'user': ['a', 'b'], 'seen': [2, 1]}
    >>> op.process(pd.DataFrame({"user": ["a"]}))["seen"].tolist()
    [3]
    """

    def __init__(self, fn: Callable[[Any, pd.DataFrame, Any], pd.DataFrame | None],
                 key: str | None = None, initial: Callable[[], Any] = dict):
        self.fn = fn
        self.key = key
        self.initial = initial
        self.states: dict[Any, Any] = {}

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        col = self.key or KEY
        if col not in batch.columns:
            raise KeyError(f"KeyedState needs the key column {col!r} (set key= or key_by)")
        outs = []
        for key, group in batch.groupby(col, sort=False):
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = self.initial()
            out = self.fn(key, group, state)
            if out is not None and len(out):
                outs.append(out)
        return pd.concat(outs, ignore_index=True) if outs else batch.iloc[0:0]

    def get_state(self) -> Any:
        return dict(self.states)

    def set_state(self, state: Any) -> None:
        self.states = dict(state or {})


class Chain(Operator):
    """Operators run one after another inside one actor."""

    def __init__(self, operators: list[Operator]):
        self.operators = list(operators)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        for op in self.operators:
            batch = op.process(batch)
        return batch

    def flush(self) -> pd.DataFrame | None:
        out = None
        for i, op in enumerate(self.operators):
            tail = op.flush()
            if tail is not None and len(tail):
                for nxt in self.operators[i + 1:]:
                    tail = nxt.process(tail)
                out = tail if out is None else pd.concat([out, tail], ignore_index=True)
        return out

    def side_outputs(self) -> dict[str, pd.DataFrame]:
        merged: dict[str, list[pd.DataFrame]] = {}
        for op in self.operators:
            for name, frame in op.side_outputs().items():
                merged.setdefault(name, []).append(frame)
        return {k: pd.concat(v, ignore_index=True) for k, v in merged.items()}

    def get_state(self) -> list[Any]:
        return [op.get_state() for op in self.operators]

    def set_state(self, state: list[Any]) -> None:
        for op, s in zip(self.operators, state or [], strict=False):
            op.set_state(s)
