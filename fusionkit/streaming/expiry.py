"""Expiry of keyed state: which keys saw nothing for ``ttl`` seconds of event time.

A stream that keys its state by user, session or device meets new keys forever; state kept
for every key ever seen grows without end. :class:`Expiry` keeps each key's last seen event
time and the stream time (the largest event time seen), and says which keys have expired:
those whose last event is more than ``ttl`` older than the stream time.

Time is event time, not the wall clock, so that what expires depends only on the events
and their order: a replay after a recovery, or the same stream cut into other batches,
expires the same keys at the same events and gives the same results. For each event,
:meth:`Expiry.resets` tells whether its key expired before it (the stream time before the
event is more than ``ttl`` past the key's last event): that key's state is dropped and
starts afresh at this event. After a batch, :meth:`Expiry.expire` drops every key that
has expired by the stream time at the batch's end, so the keys held are those seen in the
last ``ttl`` of event time (plus, once, a batch's own new keys).

Last seen times live in a numpy array indexed by a slot per key: finding the expired keys
is one vectorized comparison per batch; Python work is per key added or dropped only.
Every change is journaled while an undo point is open, so a batch that fails later in the
chain can be taken back exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Expiry"]


def grow_slots(keys: list, values: np.ndarray, fill: float) -> tuple[np.ndarray, list[int]]:
    """Double a table of slots (16 at least): ``keys`` (slot -> key) grows in place; the
    longer ``values`` (new slots set to ``fill``) and the new free slots, lowest last."""
    n = len(keys)
    grow = max(16, n)
    keys.extend([None] * grow)
    return np.concatenate([values, np.full(grow, fill)]), list(range(n + grow - 1, n - 1, -1))


class Expiry:
    """Last seen event times of keys, the stream time, and the keys past ``ttl``.

    Examples
    --------
    >>> e = Expiry(ttl=10.0)
    >>> e.advance(np.array(["a", "b"], dtype=object), np.array([0.0, 5.0]), clock=5.0)
    >>> e.expire(), len(e)
    ([], 2)
    >>> e.advance(np.array(["c"], dtype=object), np.array([12.0]), clock=12.0)
    >>> e.expire(), sorted(e.keys())
    (['a'], ['b', 'c'])
    """

    def __init__(self, ttl: float):
        if not ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.ttl = float(ttl)
        self.clock = -np.inf  # stream time: the largest finite event time seen
        self._slot: dict[Any, int] = {}
        self._key: list[Any] = []  # slot -> key (None when free)
        self._seen = np.empty(0, dtype="float64")  # slot -> last seen (+inf when free)
        self._free: list[int] = []
        self._journal: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self._slot)

    def keys(self) -> list[Any]:
        return list(self._slot)

    def seen(self, keys: Iterable[Any]) -> np.ndarray:
        """Last seen times of ``keys`` (NaN for a key not held, or held with no time yet)."""
        return np.array([self._seen[s] if (s := self._slot.get(k)) is not None else np.nan
                         for k in keys], dtype="float64")

    # -- a batch --------------------------------------------------------------------------
    def resets(self, codes: np.ndarray, uniques: np.ndarray, t: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float]:
        """For events of keys ``uniques[codes]`` at event times ``t`` (in arrival order):
        whether each key expired just before the event, each key's last seen time after the
        batch, and the stream time after it. Changes nothing (see :meth:`advance`).

        A non-finite event time counts as the stream time when the event arrives.
        """
        finite = np.isfinite(t)
        upto = np.maximum.accumulate(np.where(finite, t, -np.inf)) if len(t) else t
        before = np.concatenate([[self.clock], np.maximum(upto[:-1], self.clock)]) \
            if len(t) else t
        eff = np.where(finite, t, before)
        prior = self.seen(uniques)
        # the key's last seen before each event, as if nothing expired in the batch: it
        # gives the same answer (what an expiry drops is older than the cut-off anyway)
        earlier = pd.Series(eff).groupby(codes).cummax().groupby(codes).shift(1).to_numpy()
        last = np.fmax(prior[codes], earlier)  # NaN: a new key, nothing to reset
        reset = before - self.ttl > last
        # last seen after the batch: the max over the events since the key's last reset
        seg = pd.Series(reset).groupby(codes).cumsum().to_numpy()
        top = np.zeros(len(uniques), dtype=np.int64)
        np.maximum.at(top, codes, seg)
        tail = seg == top[codes]
        seen = np.full(len(uniques), -np.inf)
        np.maximum.at(seen, codes[tail], eff[tail])
        seen = np.where(top == 0, np.fmax(prior, seen), seen)
        clock = max(self.clock, float(upto[-1])) if len(t) else self.clock
        return reset, seen, clock

    def advance(self, keys: np.ndarray, seen: np.ndarray, clock: float) -> None:
        """Set the last seen times of ``keys`` and the stream time (after a batch)."""
        j = self._journal
        if j is not None:
            j.append(("clock", self.clock))
        self.clock = clock
        for k, s in zip(keys, seen, strict=True):
            slot = self._slot.get(k)
            if slot is None:
                slot = self._take(k)
                if j is not None:
                    j.append(("new", k))
            elif j is not None:
                j.append(("seen", slot, self._seen[slot]))
            self._seen[slot] = s

    def expire(self) -> list[Any]:
        """Drop and return the keys last seen more than ``ttl`` before the stream time."""
        cutoff = self.clock - self.ttl
        unknown = np.isnan(self._seen)  # restored from a checkpoint taken without a ttl
        if unknown.any() and np.isfinite(self.clock):
            self._seen[unknown] = self.clock
        gone = np.flatnonzero(self._seen < cutoff)
        out = []
        for slot in gone.tolist():
            key = self._key[slot]
            if self._journal is not None:
                self._journal.append(("gone", key, self._seen[slot]))
            self._release(slot)
            out.append(key)
        return out

    def forget(self, key: Hashable) -> None:
        """Drop ``key`` (its state was dropped by other means)."""
        slot = self._slot.get(key)
        if slot is not None:
            if self._journal is not None:
                self._journal.append(("gone", key, self._seen[slot]))
            self._release(slot)

    # -- slots ----------------------------------------------------------------------------
    def _take(self, key: Any) -> int:
        if not self._free:
            self._seen, self._free = grow_slots(self._key, self._seen, np.inf)
        slot = self._free.pop()
        self._slot[key] = slot
        self._key[slot] = key
        return slot

    def _release(self, slot: int) -> None:
        del self._slot[self._key[slot]]
        self._key[slot] = None
        self._seen[slot] = np.inf
        self._free.append(slot)

    # -- undo and checkpoints ---------------------------------------------------------------
    def undo_point(self) -> Callable[[], None]:
        """From now on, journal every change; the function returned takes them back."""
        journal = self._journal = []

        def undo() -> None:
            self._journal = None
            for entry in reversed(journal):
                if entry[0] == "clock":
                    self.clock = entry[1]
                elif entry[0] == "seen":
                    self._seen[entry[1]] = entry[2]
                elif entry[0] == "new":
                    self._release(self._slot[entry[1]])
                else:  # "gone"
                    slot = self._take(entry[1])
                    self._seen[slot] = entry[2]
            journal.clear()

        return undo

    def get_state(self) -> dict[str, Any]:
        keys = list(self._slot)
        return {"ttl": self.ttl, "clock": self.clock, "keys": keys,
                "seen": self.seen(keys)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.__init__(self.ttl)
        self.clock = float(state["clock"])
        for k, s in zip(state["keys"], state["seen"], strict=True):
            slot = self._take(k)
            self._seen[slot] = s
