"""The watermark of a stage with several inputs (an interval join has two), each sent by
one or more channels (the actors of an upstream stage with ``parallelism=N``).

The minimum over the inputs, and within an input over its channels, of (largest event time
seen on that channel - ``allowed_lateness``), never moving back. Each channel is in order
on its own, but N actors of one stream are not in order together: one may run seconds
ahead of another, so an input's progress is its slowest channel's, not its fastest's.

- A channel that got no event for more than ``idle`` seconds of processing time stops
  holding its input back; an input whose channels are all idle stops holding the watermark
  back (when every input is idle, the watermark catches up with the furthest: event time
  never runs ahead of the events). ``idle=None``: nothing ever counts as idle.
- An input that has brought no event at all yet is never idle: its event time is unknown
  (an outcome stream's first click comes a label delay after the first impression), so
  the watermark waits for its first event, or for its end. Within an input that has
  started, a channel that has sent nothing counts as active from the first call on.
- A channel that has ended (a finished replay) holds nothing back; an input whose channels
  have all ended holds nothing back.

Processing time is what the caller passes as ``now``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["Watermark"]


class Watermark:
    """Event-time progress of inputs of ``channels[i]`` channels each (an int ``n``: ``n``
    inputs of one channel).

    Examples
    --------
    >>> w = Watermark(2, allowed_lateness=1.0, idle=5.0)
    >>> w.touch(0, 0.0); w.see(0, 10.0); w.move(0.0); w.value
    -inf
    >>> w.touch(1, 1.0); w.see(1, 4.0); w.move(1.0); w.value
    3.0
    >>> w.move(7.0); w.value  # input 1 idle for 6 s: input 0 alone holds it
    9.0

    Two actors of one input: the slower one holds it back.

    >>> w = Watermark([2, 1])
    >>> w.see(0, 50.0, channel=0); w.see(0, 20.0, channel=1); w.see(1, 60.0); w.move(0.0)
    >>> w.value
    20.0
    """

    def __init__(self, channels: int | Sequence[int], allowed_lateness: float = 0.0,
                 idle: float | None = None):
        self.channels = [1] * channels if isinstance(channels, int) else [int(c) for c in channels]
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"every input needs at least one channel, not {channels!r}")
        self.inputs = len(self.channels)
        self.allowed_lateness = allowed_lateness
        self.idle = idle
        self.reset()

    def reset(self) -> None:
        self.value = -math.inf
        self.max = [[-math.inf] * n for n in self.channels]  # largest event time seen
        self.active: list[list[float | None]] = [[None] * n for n in self.channels]
        self.ended = [[False] * n for n in self.channels]
        self.last_now: float | None = None

    def reshape(self, channels: Sequence[int]) -> None:
        """Inputs now sent by ``channels[i]`` channels each (an upstream stage was defined
        again with another parallelism). An input whose count changed starts its channels
        afresh (its new actors replay from the same checkpoint); the value never moves back."""
        for s, n in enumerate(channels):
            if n < 1:
                raise ValueError(f"every input needs at least one channel, not {channels!r}")
            if n != self.channels[s]:
                self.channels[s] = n
                self.max[s], self.active[s] = [-math.inf] * n, [None] * n
                self.ended[s] = [False] * n

    def touch(self, side: int | None, now: float, channel: int = 0) -> None:
        """A call at processing time ``now``; channel ``channel`` of input ``side`` brought
        events (``side=None``: nothing did). Every channel counts as active from the first
        call on."""
        self.last_now = now
        for active in self.active:
            for c, t in enumerate(active):
                if t is None:
                    active[c] = now
        if side is not None:
            self.active[side][channel] = now

    def see(self, side: int, newest: float, channel: int = 0) -> None:
        """Channel ``channel`` of input ``side`` brought events up to ``newest`` (their
        largest event time)."""
        top = self.max[side]
        top[channel] = max(top[channel], newest)

    def end(self, side: int, channel: int | None = None) -> None:
        """Channel ``channel`` of input ``side`` has ended (``None``: all of them)."""
        ended = self.ended[side]
        for c in range(len(ended)) if channel is None else (channel,):
            ended[c] = True

    def end_all(self) -> None:
        for s in range(self.inputs):
            self.end(s)

    def has_ended(self, side: int) -> bool:
        return all(self.ended[side])

    def move(self, now: float) -> None:
        """Move the watermark as the inputs allow at processing time ``now``."""
        hold, live = [], []
        lateness, idle = self.allowed_lateness, self.idle
        for s in range(self.inputs):
            marks = [(m - lateness, a) for m, a, e in zip(self.max[s], self.active[s],
                                                           self.ended[s], strict=True) if not e]
            if not marks:
                continue  # ended: holds nothing back
            if all(w == -math.inf for w, _ in marks):
                hold.append(-math.inf)  # no event yet: its time is unknown, it waits
                continue
            busy = [w for w, a in marks if idle is None or a is None or not now - a > idle]
            if busy:
                hold.append(min(busy))
            live.append(max(w for w, _ in marks))
        w = min(hold) if hold else max(live) if live else math.inf
        if w > self.value:
            self.value = w

    def get_state(self) -> dict[str, Any]:
        return {"watermark": self.value, "channels": list(self.channels),
                "max": [list(m) for m in self.max], "active": [list(a) for a in self.active],
                "ended": [list(e) for e in self.ended], "last_now": self.last_now}

    def set_state(self, state: dict[str, Any]) -> None:
        """Put a snapshot back (one taken with one channel per input too: each value then
        stands for its input's one channel). ``active`` may be None: every channel counts
        as active from the next call on (a rollback's own duration is nobody's silence)."""
        def nested(values: list) -> list[list]:
            return [list(v) if isinstance(v, (list, tuple)) else [v] for v in values]
        mine = list(self.channels)
        self.value = state["watermark"]
        self.max, self.ended = nested(state["max"]), nested(state["ended"])
        self.channels = [len(m) for m in self.max]
        active = state.get("active")
        self.active = ([[None] * n for n in self.channels] if active is None
                       else nested(active))
        self.last_now = state["last_now"]
        self.reshape(mine)
