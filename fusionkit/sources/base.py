"""The source protocol: where events come from.

A source is a plain, picklable object. The stage's source actor calls ``open`` once, then
``read`` in a loop; pacing (``rate``) is applied by the actor, not by the source. Offsets
are integers counting events from the start of the source (for brokers: a position the
source can ``seek`` back to), so a stage can replay from a checkpoint.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


class Source:
    """Base class of sources. Subclasses implement ``read`` and, if they can, ``seek``.

    ``read(n)`` returns a DataFrame of at most ``n`` events with an ``_event_time`` column
    (float seconds) and an ``_offset`` column (int64), an empty DataFrame if nothing is
    available right now, or ``None`` when the source is exhausted for good.
    """

    #: events per second the actor paces this source to; ``None`` = as fast as taken
    rate: float | None = None
    #: name of the label column, if the source carries one
    label: str | None = None

    def open(self) -> None:
        """Acquire resources (connections, files). Called once inside the actor."""

    def read(self, n: int) -> pd.DataFrame | None:
        raise NotImplementedError

    def seek(self, offset: int) -> None:
        """Make the next ``read`` start at ``offset`` (replay after a failure)."""
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is covered by a completed checkpoint (brokers ack)."""

    def close(self) -> None:
        """Release resources."""

    def describe(self) -> dict[str, Any]:
        """A short description for status tables."""
        return {"kind": type(self).__name__, "rate": self.rate}
