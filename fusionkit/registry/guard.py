"""The publish guard: may a new version (the challenger) replace the live one (the champion)?"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["Guard"]


@dataclasses.dataclass
class Guard:
    """Champion/challenger rule: a challenger may replace the live version unless worse by > margin.

    A challenger that has seen fewer than ``min_events`` events is not judged: prequential
    metrics of a young model are warm-up noise. A challenger without the metric is held (the
    guard cannot vouch for it); a champion without it is not a bar to clear.

    Examples
    --------
    >>> guard = Guard(metric="accuracy_recent", margin=0.02, min_events=0)
    >>> guard.judge({"accuracy_recent": 0.85}, {"accuracy_recent": 0.86}, events_seen=500)
    (True, '')
    >>> guard.judge({"accuracy_recent": 0.81}, {"accuracy_recent": 0.86}, events_seen=500)
    (False, 'accuracy_recent 0.81 < live 0.86 - margin 0.02')
    """

    metric: str = "accuracy_recent"
    margin: float = 0.02
    higher_is_better: bool = True
    min_events: int = 1000

    def judge(
        self,
        challenger: Mapping[str, float],
        champion: Mapping[str, float] | None,
        events_seen: int,
    ) -> tuple[bool, str]:
        """``(allowed, reason)``: may a version with ``challenger`` metrics replace ``champion``?"""
        if champion is None or events_seen < self.min_events:
            return True, ""
        best = _finite(champion.get(self.metric))
        if best is None:
            return True, ""
        value = _finite(challenger.get(self.metric))
        if value is None:
            return False, f"no finite {self.metric} in the metrics (live has {best:.4g})"
        if self.higher_is_better and value < best - self.margin:
            return False, f"{self.metric} {value:.4g} < live {best:.4g} - margin {self.margin:g}"
        if not self.higher_is_better and value > best + self.margin:
            return False, f"{self.metric} {value:.4g} > live {best:.4g} + margin {self.margin:g}"
        return True, ""


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
