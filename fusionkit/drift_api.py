"""Drift from the notebook: watch a train stage, read its drift series and the alarms.

``watch_drift`` attaches a drift watch to a running train stage (see
``fusionkit.drift_detection.watch``); ``drift`` and ``alarms`` read what the monitor
collected. Alarms are also pipeline events (``fk.events()``, ``kind="alarm"``), which the
dashboard draws as markers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import ray

from fusionkit._suggest import did_you_mean
from fusionkit.api import call, handles
from fusionkit.drift_detection.store import ALARM_COLUMNS, ROW_COLUMNS
from fusionkit.errors import StageNotFoundError


def watch_drift(name: str, features: Sequence[str] | None = None,
                reference: str | int | pd.DataFrame = "first 10000 events", window: int = 5000,
                psi_alarm: float = 0.2, ks_alpha: float = 0.01, concept: str | Any | None = "adwin",
                policy: str | None = None, *, categorical: Sequence[str] | None = None,
                sliding_reference: bool = False, predictions: bool = True,
                concept_params: dict[str, Any] | None = None,
                prediction_sample: int = 500) -> dict[str, Any]:  # fmt: skip
    """Watch train stage ``name`` for drift, from its next batch on; replaces an earlier watch.

    - Feature drift: each tumbling ``window`` of events against the ``reference`` (``"first N
      events"``, an int, or a DataFrame; ``sliding_reference`` moves it along), per column of
      ``features`` (default: the model's features), by PSI and the KS test (chi-squared for
      ``categorical`` and non-numeric columns). A window alarms when PSI reaches
      ``psi_alarm`` (raised to the noise level of small windows) and the test's p-value is
      below ``ks_alpha``. With the defaults, 0 false alarms in 1,000 stationary window tests.
    - Prediction drift (``predictions``): the model's output (a binary classifier's
      probability, else its prediction), compared like with like. The model keeps learning,
      so its answers move even on a stream that does not: when a window completes,
      ``prediction_sample`` rows of the reference's inputs and as many of the window's are
      both scored by the model as it is then, and the two sets of answers are tested as a
      column is. Learning, a reset or a rollback changes both sides alike and cannot raise
      this alarm; inputs that change the model's answers do. It costs ``2 *
      prediction_sample`` predictions per window (with the defaults, 0.2 per event).
    - Concept drift: the River detector ``concept`` (``"adwin"``, ``"ddm"``, ``"hddm_a"``,
      ``"pagehinkley"``, ``"kswin"``, ...; ``None``: off) on the prequential error, with a
      check that the error went up, plus a windowed error-rate test.
    - ``policy`` on a concept-drift alarm: ``None`` (only alarm), ``"reset"`` (a fresh model
      learns from there) or ``"rollback"`` (back to the best recent version, if it scored
      better than the live model does now); each action is an event ``kind="policy"``.

    Returns the watch's settings. The watch is part of the stage's checkpoints; re-defining
    the stage removes it.
    """
    from fusionkit.drift_detection.spec import DriftSpec  # River and SciPy load on first use

    spec = DriftSpec(features=tuple(features) if features is not None else None,
                     reference=reference, window=window, psi_alarm=psi_alarm, ks_alpha=ks_alpha,
                     concept=concept, policy=policy,
                     categorical=tuple(categorical) if categorical is not None else None,
                     sliding_reference=sliding_reference, predictions=predictions,
                     concept_params=concept_params,
                     prediction_sample=prediction_sample)  # fmt: skip
    return call("watch_drift", name, spec)


def unwatch_drift(name: str) -> None:
    """Stop watching train stage ``name`` for drift (its series and alarms stay)."""
    call("watch_drift", name, None)


def _monitor() -> Any:
    return handles()["monitor"]


def _check_stage(name: str) -> None:
    names = call("stage_names")
    if name not in names:
        listing = ", ".join(sorted(names)) or "none"
        raise StageNotFoundError(f"there is no stage named {name!r} (defined: {listing})."
                                 f"{did_you_mean(name, names)}")


def drift(name: str, since: float | None = None) -> pd.DataFrame:
    """Train stage ``name``'s drift over time, one row per test, oldest first.

    ``kind`` is ``"feature"`` or ``"prediction"`` (a window test of one column: ``psi``,
    ``psi_threshold``, ``test`` with its ``statistic`` and ``p_value``, ``window`` number) or
    ``"concept"`` (``error_rate`` and the largest error-rate ``z`` over the last ``events``
    events). ``alarm`` says whether the row is in the drifted state; ``offset`` and
    ``event_time`` locate its last event in the stream. ``since``: rows after that time.
    Empty until the stage is watched (``watch_drift``).
    """
    df = ray.get(_monitor().drift.remote(name, since))
    if len(df) == 0:
        _check_stage(name)
        return pd.DataFrame(columns=ROW_COLUMNS)
    return df


def alarms(name: str | None = None, since: float | None = None) -> pd.DataFrame:
    """Drift alarms of the pipeline (or of stage ``name``), oldest first: when, which stage,
    ``kind`` (feature, prediction, concept), which column, by which statistic, its value and
    threshold, and the source offset of the event that raised it."""
    if name is not None:
        _check_stage(name)
    df = ray.get(_monitor().alarms.remote(name, since))
    return df if len(df) else pd.DataFrame(columns=ALARM_COLUMNS)


__all__ = ["alarms", "drift", "unwatch_drift", "watch_drift"]
