"""Recent samples with their times, so quantiles can be asked for a window (``since``).

A whole-run reservoir answers "over everything"; a benchmark or a dashboard that asks
"since the load started" needs the values with the time they arrived. Each arrival (one
served version's events) keeps at most ``per_chunk`` values, a uniform sample, weighted by
how many it stands for, and only the last ``chunks`` arrivals are kept.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from fusionkit.monitor.series import LATENCY_QUANTILES


class RecentSamples:
    """Timed chunks of values; weighted quantiles over the chunks newer than a time.

    Examples
    --------
    >>> r = RecentSamples()
    >>> r.add(1.0, np.full(10, 0.5))
    >>> r.add(2.0, np.linspace(0.0, 1.0, 1000))
    >>> r.count(since=1.5), round(r.quantiles_ms(since=1.5)["p50_ms"])
    (1000, 500)
    """

    def __init__(self, chunks: int = 2000, per_chunk: int = 1000, seed: int = 0):
        self.per_chunk = per_chunk
        self._chunks: deque[tuple[float, np.ndarray, int]] = deque(maxlen=chunks)
        self._rng = np.random.default_rng(seed)

    def add(self, t: float, values: np.ndarray) -> None:
        values = np.asarray(values, dtype="float64").ravel()
        n = int(values.size)
        if n > self.per_chunk:
            values = self._rng.choice(values, self.per_chunk, replace=False)
        self._chunks.append((float(t), values, n))

    def _since(self, since: float | None) -> list[tuple[float, np.ndarray, int]]:
        return [c for c in self._chunks if since is None or c[0] > since]

    def count(self, since: float | None = None) -> int:
        """How many values arrived after ``since`` (of the chunks still kept)."""
        return sum(n for _, _, n in self._since(since))

    def quantiles_ms(self, since: float | None = None) -> dict[str, float]:
        """p50/p95/p99 in milliseconds of the values (seconds) that arrived after ``since``."""
        chunks = [c for c in self._since(since) if c[1].size]
        names = [f"p{round(q * 100)}_ms" for q in LATENCY_QUANTILES]
        if not chunks:
            return dict.fromkeys(names, float("nan"))
        values = np.concatenate([v for _, v, _ in chunks])
        weights = np.concatenate([np.full(v.size, n / v.size) for _, v, n in chunks])
        order = np.argsort(values, kind="stable")
        values, cum = values[order], np.cumsum(weights[order])
        cum = (cum - weights[order] / 2) / cum[-1]  # mid-point plotting positions
        q = np.interp(LATENCY_QUANTILES, cum, values) * 1000.0
        return {name: float(v) for name, v in zip(names, q, strict=True)}
