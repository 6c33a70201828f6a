"""Impressions and their delayed outcomes: two sources sharing one hidden truth.

``synthetic_feedback`` returns the two streams of a feedback loop. Impressions are the
click generator's events (:class:`~fusionkit.sources.synthetic.Synthetic`, same features,
same drift) with a unique ``request_id`` and without the label. Outcomes are
``request_id`` and ``clicked = 1`` for the impressions whose hidden label is a click; a
non-click never arrives, as in a real system, so a join has to wait for it and decide.

Delays (event time from impression to outcome): an outcome is late with probability
``late_fraction``, independently of everything else. An on-time delay is exponential
with mean ``delay``, truncated to ``[0, horizon]``; a late one is ``horizon`` plus the
same truncated exponential, so it lies in ``(horizon, 2 * horizon]``. A join with
``within=horizon`` therefore sees exactly the on-time outcomes as matches.

Both streams are pure functions of ``(seed, offset)``. Impressions are the generator's
blocks of ``BLOCK`` events. Outcomes come in *pages*: page ``k`` holds the outcomes whose
time falls in the event time span of impression block ``k``, sorted by time, so the
outcome stream is ordered by event time with no disorder (an outcome's page is computed
once from its own time and never before its impression's block). Page ``k`` is built
from impression blocks ``k - D .. k`` with ``D = ceil(2 * horizon * rate / BLOCK) + 1``,
kept in a small cache while reading forward. An outcome's ``_offset`` is ``page * 2**32 +
its index in the page``: increasing along the stream (not contiguous), so ``seek`` to the
last offset read plus one replays exactly.

With a ``rate``, the outcomes source releases an outcome only once the wall clock has
reached its event time (``read`` returns an empty frame until then), as outcomes of a
live system would come; without one, it reads as fast as taken (replay). Impression times
start at ``start_time`` (default: when the sources are made) and advance ``1 / rate`` per
event, so impressions read later than the clock (a stage started late, a slow reader)
can meet outcomes that came first: a join keeps those until their impression arrives.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit.batch import EVENT_TIME, OFFSET
from fusionkit.sources.base import Source
from fusionkit.sources.drift import ConceptDrift, FeatureDrift, parse_seconds
from fusionkit.sources.synthetic import BLOCK, Synthetic

__all__ = ["FeedbackImpressions", "FeedbackOutcomes", "synthetic_feedback"]

PAGE = 2**32  # outcome offsets: page * PAGE + index in the page
REQUEST_ID = "request_id"


def _seconds(value: float | int | str, what: str) -> float:
    try:
        s = parse_seconds(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        s = math.nan
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"{what} must be a positive duration such as '5s', not {value!r}")
    return s


class FeedbackImpressions(Source):
    """The impressions of :func:`synthetic_feedback`: features, ``request_id`` (the
    impression's offset, unique in the stream), ``_event_time``; no label."""

    label = None

    def __init__(self, truth: Synthetic):
        self.truth = truth
        self.name = truth.name
        self.rate = truth.rate
        self.batch_hint = truth.batch_hint

    def open(self) -> None:
        self.truth.open()

    def read(self, n: int) -> pd.DataFrame | None:
        batch = self.truth.read(n)
        if batch is None:
            return None
        batch = batch.drop(columns=[self.truth.label])
        batch.insert(0, REQUEST_ID, batch[OFFSET].to_numpy().copy())
        return batch

    def seek(self, offset: int) -> None:
        self.truth.seek(offset)

    def close(self) -> None:
        self.truth.close()

    def drift_points(self) -> list:
        return self.truth.drift_points()

    def describe(self) -> dict[str, Any]:
        return {**self.truth.describe(), "kind": "FeedbackImpressions"}


class FeedbackOutcomes(Source):
    """The outcomes of :func:`synthetic_feedback`: ``request_id``, ``clicked`` (always 1),
    ``_event_time`` (impression time + delay), in event time order."""

    label = "clicked"

    def __init__(self, truth: Synthetic, delay: float, late_fraction: float,
                 horizon: float, name: str):
        self.truth = truth
        self.name = name
        self.delay = delay
        self.late_fraction = late_fraction
        self.horizon = horizon
        self.rate = None  # released by event time (live) or as fast as taken (replay)
        self.live = truth.rate is not None
        self.batch_hint = truth.batch_hint
        self._event_rate = truth._event_rate
        self.span = math.ceil(2 * horizon * self._event_rate / BLOCK) + 1  # D, in blocks
        self._page = 0
        self._index = 0
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._pages: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_blocks"], state["_pages"] = {}, {}
        return state

    # -- the source protocol -------------------------------------------------------------
    def read(self, n: int) -> pd.DataFrame | None:
        if n < 0:
            raise ValueError(f"read needs n >= 0, not {n}")
        last = self._last_page()
        if last is not None and self._page > last:
            return None
        rids, times, offs = [], [], []
        clock = now() if self.live else math.inf
        budget = self.span + 2  # pages looked at per read, so one read stays short
        while n > 0 and budget > 0 and (last is None or self._page <= last):
            rid, t = self._page_rows(self._page)
            hi = min(len(t), self._index + n)
            if self.live:
                hi = self._index + int(np.searchsorted(t[self._index:hi], clock, side="right"))
            rids.append(rid[self._index:hi])
            times.append(t[self._index:hi])
            offs.append(self._page * PAGE + np.arange(self._index, hi, dtype=np.int64))
            n -= hi - self._index
            if hi < len(t):
                self._index = hi
                break
            self._page, self._index = self._page + 1, 0
            budget -= 1
        return pd.DataFrame({REQUEST_ID: _cat(rids, np.int64),
                             "clicked": np.ones(sum(map(len, rids)), dtype=np.int64),
                             EVENT_TIME: _cat(times, np.float64), OFFSET: _cat(offs, np.int64)})

    def seek(self, offset: int) -> None:
        """Make the next ``read`` start at ``offset`` (an offset read before plus one)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        self._page, self._index = divmod(int(offset), PAGE)
        if self._index and self._index >= len(self._page_rows(self._page)[1]):
            self._page, self._index = self._page + 1, 0

    def position(self) -> int:
        return self._page * PAGE + self._index

    def close(self) -> None:
        self._blocks.clear()
        self._pages.clear()

    def describe(self) -> dict[str, Any]:
        return {"kind": "FeedbackOutcomes", "name": self.name, "rate": None,
                "seed": self.truth.seed,
                "delay": self.delay, "late_fraction": self.late_fraction,
                "horizon": self.horizon, "page": self._page}

    # -- generation ----------------------------------------------------------------------
    def _last_page(self) -> int | None:
        m = self.truth.max_events
        if m is None:
            return None
        return -1 if m == 0 else (m - 1) // BLOCK + self.span

    def delays(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """The delay every impression of ``block`` would have if clicked, and whether late."""
        rng = np.random.default_rng([self.truth.seed, block, 7])
        u_late, u = rng.random((2, BLOCK))
        late = u_late < self.late_fraction
        m, h = self.delay, self.horizon
        d = -m * np.log1p(-u * -np.expm1(-h / m))  # exponential(mean m) truncated to [0, h]
        return np.where(late, h + np.maximum(d, np.finfo(float).tiny * h), d), late

    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Outcomes of impression block ``block``: request ids, times, pages."""
        if block not in self._blocks:
            if len(self._blocks) > self.span + 2:
                self._blocks.pop(min(self._blocks))
            rows = self.truth._generate(block)
            clicked = rows["clicked"] == 1
            if self.truth.max_events is not None:
                clicked &= rows[OFFSET] < self.truth.max_events
            d, late = self.delays(block)
            imp = rows[EVENT_TIME][clicked]
            t = imp + d[clicked]
            # a late outcome stays after the horizon once added to its impression's time
            t = np.where(late[clicked], np.maximum(t, np.nextafter(imp + self.horizon, np.inf)),
                         t)
            start = self.truth.start_time
            page = np.floor((t - start) * self._event_rate / BLOCK)
            page = np.clip(np.nan_to_num(page), block, block + self.span).astype(np.int64)
            self._blocks[block] = (rows[OFFSET][clicked], t, page)
        return self._blocks[block]

    def _page_rows(self, page: int) -> tuple[np.ndarray, np.ndarray]:
        """Request ids and times of the outcomes of ``page``, sorted by (time, id)."""
        if page not in self._pages:
            if len(self._pages) > 2:
                self._pages.pop(min(self._pages))
            parts = [self._block(b) for b in range(max(0, page - self.span), page + 1)]
            rid = np.concatenate([r[p == page] for r, _, p in parts])
            t = np.concatenate([t[p == page] for _, t, p in parts])
            order = np.lexsort((rid, t))
            self._pages[page] = (rid[order], t[order])
        return self._pages[page]


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


def synthetic_feedback(name: str = "feedback", rate: float | None = 5000, seed: int = 0,
                       delay: float | str = "5s", late_fraction: float = 0.02,
                       horizon: float | str = "30s",
                       drift: Iterable[FeatureDrift | ConceptDrift] = (),
                       max_events: int | None = None, start_time: float | None = None,
                       batch_hint: int | None = None
                       ) -> tuple[FeedbackImpressions, FeedbackOutcomes]:
    """Impressions (features + ``request_id``, no label) and their delayed outcomes
    (``request_id``, ``clicked = 1``, only for clicks) sharing one hidden truth.

    ``rate``, ``seed``, ``drift``, ``max_events``, ``start_time`` and ``batch_hint`` are
    the impressions' as for :class:`~fusionkit.sources.synthetic.Synthetic`. Delays:
    exponential with mean ``delay`` truncated to ``horizon``, except a ``late_fraction``
    of them, which fall in ``(horizon, 2 * horizon]`` (see the module's text).

    Examples
    --------
    >>> ads, clicks = synthetic_feedback("ads", rate=None, seed=1, max_events=5000,
    ...                                  start_time=0.0)
    >>> imp, out = ads.read(5000), clicks.read(10_000)
    >>> "clicked" in imp.columns, imp["request_id"].is_unique
    (False, True)
    >>> bool(out["_event_time"].is_monotonic_increasing), bool(out["request_id"].isin(imp["request_id"]).all())
    (True, True)
    """
    if not (isinstance(late_fraction, int | float) and 0.0 <= late_fraction <= 1.0):
        raise ValueError(f"late_fraction must be between 0 and 1, not {late_fraction!r}")
    start = float(now() if start_time is None else start_time)
    truth = Synthetic(name, rate=rate, seed=seed, max_events=max_events, drift=drift,
                      start_time=start, batch_hint=batch_hint)
    outcomes = FeedbackOutcomes(Synthetic(name, rate=rate, seed=seed, max_events=max_events,
                                          drift=drift, start_time=start),
                                delay=_seconds(delay, "delay"), late_fraction=late_fraction,
                                horizon=_seconds(horizon, "horizon"), name=f"{name}-outcomes")
    return FeedbackImpressions(truth), outcomes
