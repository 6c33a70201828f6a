"""What a drift watch asks of its train stage, and what the stage did: the seam between them.

The watch only observes: after each batch it returns a :class:`Decision` (nothing, reset the
learner, or roll back), made from the stage's policy and the concept-drift alarm of that
batch. The train stage carries it out (it owns the learner, the registry and the
prequential metrics) and hands the watch an :class:`Outcome`, which the watch logs as a
``kind="policy"`` event. Which version to roll back to is chosen here, without Ray, from
the registry's table of versions (:func:`rollback_choice`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from fusionkit.drift_detection.records import Alarm

__all__ = ["NOTHING", "POLICIES", "Decision", "Outcome", "decide", "rollback_choice"]

POLICIES = ("reset", "rollback")
NAN = float("nan")


@dataclass(frozen=True)
class Decision:
    """What the stage should do after a batch: ``action`` is ``"none"``, ``"reset"`` (a
    fresh learner) or ``"rollback"`` (to the best recent version, if one scored better than
    the live model does now). ``reason`` says why; ``error_now`` is the error the concept
    detector sees now (NaN when it does not know it).

    Examples
    --------
    >>> alarm = Alarm(0.0, "ctr", "concept", "error", "adwin", 0.2, 0.0, 41_999,
    ...               before=0.1, after=0.3)
    >>> decide("reset", alarm)
    Decision(action='reset', reason='concept drift at offset 41999 (error 0.1 -> 0.3)', error_now=0.3)
    >>> decide(None, alarm).action, decide("rollback", None).action
    ('none', 'none')
    """

    action: str = "none"
    reason: str = ""
    error_now: float = NAN


NOTHING = Decision()


@dataclass(frozen=True)
class Outcome:
    """What the stage did about a :class:`Decision`: ``status`` is ``"reset"``,
    ``"rollback"``, ``"kept"`` (no version beat the live model) or ``"error"``; ``version``
    the version rolled back to."""

    status: str
    detail: str
    version: int | None = None

    @property
    def acted(self) -> bool:
        """The learner was changed (a reset or a rollback)."""
        return self.status in ("reset", "rollback")


def decide(policy: str | None, alarm: Alarm | None) -> Decision:
    """The decision of ``policy`` (``None``, ``"reset"``, ``"rollback"``) on the last
    concept-drift ``alarm`` of a batch (``None``: there was none)."""
    if policy is None or alarm is None:
        return NOTHING
    change = f"error {alarm.before:.3g} -> {alarm.after:.3g}" if alarm.after == alarm.after \
        else f"{alarm.statistic} {alarm.value:.3g}"  # fmt: skip
    return Decision(policy, f"concept drift at offset {alarm.offset} ({change})", alarm.after)


def rollback_choice(table: pd.DataFrame, versions: Iterable[int], metric: str,
                    higher_is_better: bool, current: float) -> Outcome:  # fmt: skip
    """The best recent version to roll back to, if it scored better than ``current`` (the
    live model's ``metric`` now): ``Outcome("rollback", ..., version)``, else ``"kept"``.

    Only the stage's own ``versions`` count (an earlier definition of the same name, another
    model or the same one before a restart from scratch, left versions it never learned),
    held in memory and not held back.

    Examples
    --------
    >>> table = pd.DataFrame({"version": [1, 2, 3], "in_memory": True,
    ...                       "status": ["ok", "ok", "held"], "recent_accuracy": [.8, .9, .95]})
    >>> rollback_choice(table, [1, 2, 3], "recent_accuracy", True, 0.7)
    Outcome(status='rollback', detail='rolled back to v2 (recent_accuracy 0.900, now 0.700)', version=2)
    >>> rollback_choice(table, [1], "recent_accuracy", True, 0.85).status
    'kept'
    """
    if metric not in table.columns:
        return Outcome("kept", "no published version has a recent metric yet")
    mine = table["version"].isin(list(versions))
    ok = table[mine & table["in_memory"] & (table["status"] != "held")].dropna(subset=[metric])
    if ok.empty:
        return Outcome("kept", "no recent version to roll back to")
    best = ok.loc[ok[metric].idxmax() if higher_is_better else ok[metric].idxmin()]
    value, version = float(best[metric]), int(best["version"])
    better = value > current if higher_is_better else value < current
    if not better:
        return Outcome("kept", f"kept the model: no recent version beats it ({metric} of "
                               f"v{version} {value:.3f}, now {current:.3f})")
    return Outcome("rollback", f"rolled back to v{version} ({metric} {value:.3f}, "
                               f"now {current:.3f})", version)
