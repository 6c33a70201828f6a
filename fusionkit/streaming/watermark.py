"""The watermark of a stage with several inputs (an interval join has two).

The minimum over the inputs of (largest event time seen - ``allowed_lateness``), never
moving back. An input that got no event for more than ``idle`` seconds of processing time
stops holding it back (when every input is idle, the watermark catches up with the
furthest: event time never runs ahead of the events); an input that has ended holds nothing
back. Processing time is what the caller passes as ``now``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["Watermark"]


class Watermark:
    """Event-time progress of ``inputs`` inputs.

    Examples
    --------
    >>> w = Watermark(2, allowed_lateness=1.0, idle=5.0)
    >>> w.touch(0, 0.0); w.see(0, 10.0); w.move(0.0); w.value
    -inf
    >>> w.touch(1, 1.0); w.see(1, 4.0); w.move(1.0); w.value
    3.0
    >>> w.move(7.0); w.value  # input 1 idle for 6 s: input 0 alone holds it
    9.0
    """

    def __init__(self, inputs: int, allowed_lateness: float = 0.0, idle: float | None = None):
        self.inputs = inputs
        self.allowed_lateness = allowed_lateness
        self.idle = idle
        self.reset()

    def reset(self) -> None:
        self.value = -math.inf
        self.max = [-math.inf] * self.inputs  # largest event time seen per input
        self.active: list[float | None] = [None] * self.inputs  # last processing time with events
        self.ended = [False] * self.inputs
        self.last_now: float | None = None

    def touch(self, side: int | None, now: float) -> None:
        """A call at processing time ``now``; ``side`` brought events (None: no input did).
        An input counts as active from the first call on."""
        self.last_now = now
        for s in range(self.inputs):
            if self.active[s] is None:
                self.active[s] = now
        if side is not None:
            self.active[side] = now

    def see(self, side: int, newest: float) -> None:
        """Input ``side`` brought an event at ``newest`` (its largest event time)."""
        self.max[side] = max(self.max[side], newest)

    def move(self, now: float) -> None:
        """Move the watermark as the inputs allow at processing time ``now``."""
        hold, live = [], []
        for s in range(self.inputs):
            if self.ended[s]:
                continue
            w = self.max[s] - self.allowed_lateness
            live.append(w)
            if self.idle is None or not now - self.active[s] > self.idle:
                hold.append(w)
        w = min(hold) if hold else max(live) if live else math.inf
        if w > self.value:
            self.value = w

    def get_state(self) -> dict[str, Any]:
        return {"watermark": self.value, "max": list(self.max), "active": list(self.active),
                "ended": list(self.ended), "last_now": self.last_now}

    def set_state(self, state: dict[str, Any]) -> None:
        self.value = state["watermark"]
        self.max, self.active = list(state["max"]), list(state["active"])
        self.ended, self.last_now = list(state["ended"]), state["last_now"]
