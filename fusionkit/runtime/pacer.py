"""Pacing a source to a rate, cutting batches by size or by the time their first event waited."""

from __future__ import annotations

import time

import numpy as np

from fusionkit._clock import monotonic, now


class Pacer:
    """Decides how many events a source may emit now, and when each of them arrived.

    With a ``rate``, event ``k`` is due at ``start + k / rate``; a batch is cut when
    ``batch_size`` events are due or the oldest due event has waited ``linger`` seconds. Its
    ingest times are the events' due times (wall clock), so time spent waiting for a batch
    to fill, or behind a slow pipeline, counts in freshness. Without a rate the source is
    read as fast as the pipeline takes it and events are stamped when read.

    Examples
    --------
    >>> p = Pacer(rate=None, batch_size=100)
    >>> n, ts = p.take()
    >>> n, ts.shape
    (100, (100,))
    """

    def __init__(self, rate: float | None, batch_size: int, linger: float = 0.01):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive, or None for as fast as possible")
        self.rate = rate
        self.batch_size = batch_size
        self.linger = linger
        self.reset()

    def reset(self) -> None:
        """Start the schedule afresh (after a pause: no burst to catch up)."""
        self._start_mono = monotonic()
        self._start_wall = now()
        self.emitted = 0

    def take(self, stop=None) -> tuple[int, np.ndarray]:
        """Wait until a batch is due; return its size and its events' ingest times."""
        if self.rate is None:
            return self.batch_size, np.full(self.batch_size, now())
        while True:
            elapsed = monotonic() - self._start_mono
            due = int(elapsed * self.rate) - self.emitted
            oldest_wait = elapsed - self.emitted / self.rate
            if due >= self.batch_size or (due > 0 and oldest_wait >= self.linger):
                n = min(due, self.batch_size)
                k = np.arange(self.emitted, self.emitted + n, dtype="float64")
                return n, self._start_wall + (k + 1) / self.rate
            if stop is not None and stop.is_set():
                return 0, np.empty(0)
            full_at = (self.emitted + self.batch_size) / self.rate
            linger_at = (self.emitted + 1) / self.rate + self.linger
            time.sleep(max(0.0005, min(full_at, linger_at) - elapsed))

    def consumed(self, n: int) -> None:
        """``n`` of the events taken were actually emitted."""
        self.emitted += n

    def lag(self) -> float:
        """Seconds the emitted stream is behind its schedule (0 when keeping up)."""
        if self.rate is None:
            return 0.0
        return max(0.0, (monotonic() - self._start_mono) - self.emitted / self.rate)
