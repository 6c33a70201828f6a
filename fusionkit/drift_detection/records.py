"""The records drift monitors produce: an :class:`Alarm`, and a :class:`DriftResult` (the
rows for the drift series and the alarms of one update)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Alarm", "DriftResult"]

NAN = float("nan")


@dataclass(frozen=True)
class Alarm:
    """One drift alarm: what drifted, when, by which statistic against which threshold.

    ``kind`` is ``"feature"``, ``"prediction"`` or ``"concept"``; ``feature`` names the
    column (``"prediction"`` for the model's outputs, the error stream's name for concept
    alarms). ``offset`` is the source position of the event that raised it; ``before`` and
    ``after`` are the monitored mean before and after the change (concept alarms).

    Examples
    --------
    >>> a = Alarm(0.0, "ctr", "feature", "amount", "psi", 0.31, 0.2, offset=15_000)
    >>> a.as_dict()["kind"], a.value >= a.threshold
    ('feature', True)
    """

    time: float
    stage: str
    kind: str
    feature: str
    statistic: str
    value: float
    threshold: float
    offset: int
    event_time: float = NAN
    p_value: float = NAN
    before: float = NAN
    after: float = NAN

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftResult:
    """What one ``update`` produced: rows for the drift time series, and new alarms."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
