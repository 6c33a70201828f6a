"""Stateless and keyed operators of a stream stage: map, filter, key_by, keyed state, chains.

Each works on a whole batch (a DataFrame) with vectorized user functions; the only Python
loop is :class:`KeyedState`'s, once per key in a batch. Keys are hashed with pandas' stable
hash, so a key lands on the same parallel actor in every process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._suggest import did_you_mean
from fusionkit.batch import EVENT_TIME, RESERVED
from fusionkit.streaming.base import Operator
from fusionkit.streaming.expiry import Expiry
from fusionkit.streaming.windows import parse_duration

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


class KeyedState(Operator):
    """Keep state per key across batches: ``fn(key, events_of_key, state) -> DataFrame | None``.

    ``state`` is the mutable object ``initial()`` made the first time the key was seen; ``fn``
    updates it in place. The key is the column ``key``, or ``_key`` (set by :class:`KeyBy`)
    when ``key`` is None. Outputs are concatenated in the order keys first appear in the
    batch. ``get_state`` gives a copy of ``{key: state}`` for checkpoints.

    ``ttl`` (seconds, or e.g. ``"30min"``) bounds the state: a key that saw no event for
    ``ttl`` of event time (the largest ``_event_time`` seen minus its last event's) is
    dropped, and starts again from ``initial()`` if it comes back. Event time, not the wall
    clock, so a replay after a recovery or other batch cuts drop the same keys at the same
    events (``fusionkit.streaming.expiry``); the batches need ``_event_time``. Without
    ``ttl`` every key is kept for good. ``held_keys`` is the number of keys held,
    ``evicted`` how many were dropped.

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

    With a ``ttl``, a key quiet for longer than it starts afresh:

    >>> op = KeyedState(running, key="user", ttl="10s")
    >>> t = {"_event_time": [0.0, 1.0, 30.0, 31.0]}
    >>> op.process(pd.DataFrame({"user": list("abcb"), "spend": [1.0, 5.0, 3.0, 2.0], **t}))
      user  spend  _event_time  total  count
    0    a    1.0          0.0    1.0      1
    1    b    5.0          1.0    5.0      1
    3    b    2.0         31.0    2.0      1
    2    c    3.0         30.0    3.0      1
    >>> sorted(op.states), op.evicted
    (['b', 'c'], 2)
    """

    def __init__(self, fn: Callable[[Any, pd.DataFrame, Any], pd.DataFrame | None],
                 key: str | None = None, initial: Callable[[], Any] = dict,
                 ttl: float | str | None = None):
        self.fn = fn
        self.key = key
        self.initial = initial
        self.ttl = ttl
        self.states: dict[Any, Any] = {}
        self._expiry = Expiry(parse_duration(ttl)) if ttl is not None else None
        self.evicted = 0
        self._journal: dict[Any, Any] | None = None  # key -> its state before this batch

    def _undo_point(self) -> Callable[[], None]:
        """From now on, note each key's state before ``fn`` changes it in place (a copy of
        the states of the batch's keys only: the cost is one deepcopy per key a batch
        touches, not of all the state)."""
        journal = self._journal = {}
        expiry = self._expiry.undo_point() if self._expiry is not None else None
        evicted = self.evicted

        def undo() -> None:
            for key, before in journal.items():
                if before is _NEW:
                    self.states.pop(key, None)
                else:
                    self.states[key] = before
            journal.clear()
            if expiry is not None:
                expiry()
                self.evicted = evicted

        return undo

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        col = self.key or KEY
        if col not in batch.columns:
            raise KeyError(f"KeyedState needs the key column {col!r} (pass key= or add key_by); "
                           f"columns are {_user_columns(batch)}")
        if self._expiry is not None:
            return self._process_expiring(batch, col)
        outs = self._apply((key, 0, group) for key, group
                           in batch.groupby(col, sort=False, dropna=False))
        return pd.concat(outs) if outs else batch.iloc[0:0]

    def _apply(self, groups) -> list[pd.DataFrame]:
        """Call the function on each ``(key, segment, events)`` with the key's state (a new
        one where the key has none, or where ``segment > 0``: it expired before these events),
        noting in the journal what a failed batch must put back; return the non-empty outputs."""
        outs = []
        journal = self._journal
        for key, s, group in groups:
            state = self.states.get(key)
            if journal is not None and key not in journal:
                journal[key] = _NEW if state is None else copy.deepcopy(state)
            if state is None or s > 0:
                self.evicted += state is not None
                state = self.states[key] = self.initial()
            out = self.fn(key, group, state)
            if out is None:
                continue
            if not isinstance(out, pd.DataFrame):
                raise TypeError(f"the keyed function {_name(self.fn)}() returned a "
                                f"{type(out).__name__}; it must return a DataFrame or None")
            if len(out):
                outs.append(out)
        return outs

    def _process_expiring(self, batch: pd.DataFrame, col: str) -> pd.DataFrame:
        """``process`` with a ``ttl``: a key's state starts afresh at an event before which
        the key expired (a key may then get two calls in one batch), and every key expired
        by the batch's end is dropped."""
        if EVENT_TIME not in batch.columns:
            raise KeyError(f"KeyedState(ttl=...) counts time in event time: the batch needs "
                           f"the {EVENT_TIME!r} column")
        expiry = self._expiry
        t = pd.to_numeric(batch[EVENT_TIME], errors="coerce").to_numpy("float64", na_value=np.nan)
        codes, uniques = pd.factorize(batch[col], use_na_sentinel=False)
        uniques = np.asarray(uniques, dtype=object)
        reset, seen, clock = expiry.resets(codes, uniques, t)
        if reset.any():  # a key's events before and after it expired go in two calls
            seg = pd.Series(reset).groupby(codes).cumsum().to_numpy()
            first = np.unique(codes, return_index=True)[1]  # keys in order of appearance
            rank = np.empty(len(uniques), dtype=np.int64)
            rank[np.argsort(first, kind="stable")] = np.arange(len(uniques))
            groups = ((uniques[code], s, group) for (_, code, s), group
                      in batch.groupby([rank[codes], codes, seg], sort=True))
        else:
            groups = ((key, 0, group) for key, group
                      in batch.groupby(col, sort=False, dropna=False))
        outs = self._apply(groups)
        journal = self._journal
        expiry.advance(uniques, seen, clock)
        for key in expiry.expire():
            state = self.states.pop(key, None)
            if journal is not None and key not in journal and state is not None:
                journal[key] = state
            self.evicted += 1
        return pd.concat(outs) if outs else batch.iloc[0:0]

    @property
    def held_keys(self) -> int:
        """How many keys have state now."""
        return len(self.states)

    def get_state(self) -> dict[Any, Any]:
        """A copy of ``{key: state}``; with a ``ttl``, ``{"states": ..., "expiry": ...}``
        (the keys' last seen event times and the stream time too)."""
        if self._expiry is None:
            return copy.deepcopy(self.states)
        return {"states": copy.deepcopy(self.states), "expiry": self._expiry.get_state(),
                "evicted": self.evicted}

    def set_state(self, state: dict[Any, Any] | None) -> None:
        state = dict(state or {})
        if self._expiry is None:
            self.states = copy.deepcopy(state)
            return
        if set(state) == {"states", "expiry", "evicted"}:
            self.states = copy.deepcopy(dict(state["states"]))
            self._expiry.set_state(state["expiry"])
            self.evicted = int(state["evicted"])
        else:  # taken without a ttl: the keys' times are unknown, they count from now on
            self.states = copy.deepcopy(state)
            self._expiry.set_state({"clock": -np.inf, "keys": list(state),
                                    "seen": np.full(len(state), np.nan)})


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

    @property
    def held_keys(self) -> int:
        """Keys held by the operators that keep state per key (windows, keyed state)."""
        return sum(int(getattr(op, "held_keys", 0) or 0) for op in self.operators)

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
