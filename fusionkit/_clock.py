"""The one clock of fusionkit: wall-clock seconds as float."""

from __future__ import annotations

import time


def now() -> float:
    """Wall-clock time in seconds since the epoch (the time base of every timestamp)."""
    return time.time()


def monotonic() -> float:
    """Monotonic seconds, for measuring durations and pacing."""
    return time.perf_counter()
