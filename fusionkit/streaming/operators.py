"""Stateless and keyed operators of a stream stage: map, filter, key_by, keyed state, chains.

Each works on a whole batch (a DataFrame) with vectorized user functions; the only Python
loop is :class:`KeyedState`'s, once per key in a batch. Keys are hashed with pandas' stable
hash, so a key lands on the same parallel actor in every process.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit.batch import RESERVED
from fusionkit.streaming.base import Operator

__all__ = ["KEY", "Chain", "Filter", "KeyBy", "KeyedState", "Map", "key_hash", "partition",
           "undo_point"]

KEY = "_key"
_NEW = object()  # a key KeyedState first saw in the batch being processed


def undo_point(op: Operator) -> Callable[[], None] | None:
    """A function that puts ``op``'s state back as it is now, or None if it has none.

    A batch that fails part-way through a chain must leave every operator as before it, so
    the batch can be processed again (by a fixed chain, after a recovery) exactly once.
    fusionkit's stateful operators give a cheap one (``_undo_point``); another operator
    with state (its own ``get_state``) is snapshotted through ``get_state``/``set_state``.
    """
    own = getattr(op, "_undo_point", None)
    if own is not None:
        return own()
    if type(op).get_state is Operator.get_state:
        return None  # stateless
    state = op.get_state()
    return lambda: op.set_state(state)


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
                close = difflib.get_close_matches(self.key, map(str, batch.columns), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
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


class KeyedState(Operator):
    """Keep state per key across batches: ``fn(key, events_of_key, state) -> DataFrame | None``.

    ``state`` is the mutable object ``initial()`` made the first time the key was seen; ``fn``
    updates it in place. The key is the column ``key``, or ``_key`` (set by :class:`KeyBy`)
    when ``key`` is None. Outputs are concatenated in the order keys first appear in the
    batch. ``get_state`` gives a copy of ``{key: state}`` for checkpoints.

    Examples
    --------
    A running count and sum of spend per user:

    >>> def running(user, events, state):
    ...     total = state.get("sum", 0.0) + events["spend"].cumsum()
    ...     count = state.get("count", 0) + np.arange(1, len(events) + 1)
    ...     state["sum"], state["count"] = float(total.iloc[-1]), int(count[-1])
    ...     return events.assign(total=total, count=count)
    >>> op = KeyedState(running, key="user")
    >>> op.process(pd.DataFrame({"user": ["a", "b", "a"], "spend": [1.0, 5.0, 2.0]}))
      user  spend  total  count
    0    a    1.0    1.0      1
    2    a    2.0    3.0      2
    1    b    5.0    5.0      1
    >>> op.process(pd.DataFrame({"user": ["a"], "spend": [4.0]}))[["total", "count"]].values
    array([[7., 3.]])
    >>> op.get_state()
    {'a': {'sum': 7.0, 'count': 3}, 'b': {'sum': 5.0, 'count': 1}}
    """

    def __init__(self, fn: Callable[[Any, pd.DataFrame, Any], pd.DataFrame | None],
                 key: str | None = None, initial: Callable[[], Any] = dict):
        self.fn = fn
        self.key = key
        self.initial = initial
        self.states: dict[Any, Any] = {}
        self._journal: dict[Any, Any] | None = None  # key -> its state before this batch

    def _undo_point(self) -> Callable[[], None]:
        """From now on, note each key's state before ``fn`` changes it in place (a copy of
        the states of the batch's keys only: the cost is one deepcopy per key a batch
        touches, not of all the state)."""
        journal = self._journal = {}

        def undo() -> None:
            for key, before in journal.items():
                if before is _NEW:
                    self.states.pop(key, None)
                else:
                    self.states[key] = before
            journal.clear()

        return undo

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        col = self.key or KEY
        if col not in batch.columns:
            raise KeyError(f"KeyedState needs the key column {col!r} (pass key= or add key_by); "
                           f"columns are {_user_columns(batch)}")
        outs = []
        journal = self._journal
        for key, group in batch.groupby(col, sort=False, dropna=False):
            state = self.states.get(key)
            if journal is not None and key not in journal:
                journal[key] = _NEW if state is None else copy.deepcopy(state)
            if state is None:
                state = self.states[key] = self.initial()
            out = self.fn(key, group, state)
            if out is None:
                continue
            if not isinstance(out, pd.DataFrame):
                raise TypeError(f"the keyed function {_name(self.fn)}() returned a "
                                f"{type(out).__name__}; it must return a DataFrame or None")
            if len(out):
                outs.append(out)
        return pd.concat(outs) if outs else batch.iloc[0:0]

    def get_state(self) -> dict[Any, Any]:
        return copy.deepcopy(self.states)

    def set_state(self, state: dict[Any, Any] | None) -> None:
        self.states = copy.deepcopy(dict(state or {}))


class Chain(Operator):
    """Operators run one after another inside one actor.

    ``flush`` passes what each operator still holds through the operators after it; side
    outputs of all operators are merged by name; the state is a list, one item per operator.

    Examples
    --------
    >>> chain = Chain([Filter("x > 0"), Map(lambda d: d.assign(y=d["x"] * 2))])
    >>> chain.process(pd.DataFrame({"x": [-1, 2]}))["y"].tolist()
    [4]
    """

    def __init__(self, operators: list[Operator]):
        self.operators = list(operators)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Run ``batch`` through the operators; all or nothing: if one raises, every
        operator's state (open windows, keyed state, late events set aside) is put back
        as it was before the batch, and the error goes on up."""
        undo = [undo_point(op) for op in self.operators]
        try:
            for op in self.operators:
                batch = op.process(batch)
        except BaseException:
            for back in undo:
                if back is not None:
                    back()
            raise
        return batch

    def flush(self) -> pd.DataFrame | None:
        out = []
        for i, op in enumerate(self.operators):
            tail = op.flush()
            if tail is not None and len(tail):
                for nxt in self.operators[i + 1:]:
                    tail = nxt.process(tail)
                if len(tail):
                    out.append(tail)
        return pd.concat(out, ignore_index=True) if out else None

    def side_outputs(self) -> dict[str, pd.DataFrame]:
        merged: dict[str, list[pd.DataFrame]] = {}
        for op in self.operators:
            for name, frame in op.side_outputs().items():
                merged.setdefault(name, []).append(frame)
        return {name: pd.concat(frames) for name, frames in merged.items()}

    def get_state(self) -> list[Any]:
        return [op.get_state() for op in self.operators]

    def set_state(self, state: list[Any] | None) -> None:
        if state is None:
            return
        if len(state) != len(self.operators):
            raise ValueError(f"the checkpoint holds the state of {len(state)} operators but the "
                             f"chain has {len(self.operators)}; it was taken of another chain")
        for op, s in zip(self.operators, state, strict=True):
            op.set_state(s)
