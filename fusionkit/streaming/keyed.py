"""Keyed state of a stream stage: a user function called per key with that key's state.

The only Python loop of the stream operators is here, once per key in a batch. State may
expire by event time (``ttl``, :mod:`fusionkit.streaming.expiry`); a batch that fails later
in a chain is taken back through a journal of the keys it touched (``_undo_point``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._duration import parse_duration
from fusionkit.batch import EVENT_TIME
from fusionkit.streaming.base import Operator
from fusionkit.streaming.expiry import Expiry
from fusionkit.streaming.operators import KEY, _name, _user_columns

__all__ = ["KeyedState"]

_NEW = object()  # a key KeyedState first saw in the batch being processed


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
