"""What ``fk.watch_drift`` asks for: the settings of a train stage's drift watch, checked
before anything runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fusionkit._suggest import did_you_mean
from fusionkit.drift_detection.monitor import DriftMonitor
from fusionkit.drift_detection.policy import POLICIES
from fusionkit.errors import FusionError, SettingsError

__all__ = ["DriftSpec"]


@dataclass(frozen=True)
class DriftSpec:
    """What to watch on a train stage, and what to do on a concept-drift alarm.

    The parameters are those of :class:`~fusionkit.drift_detection.monitor.DriftMonitor` (see it for
    the calibration of ``psi_alarm`` and ``ks_alpha`` to the window size), plus ``policy``
    (``None``, ``"reset"`` or ``"rollback"``) and ``predictions`` (watch the model's output
    as the pseudo-feature ``"prediction"``: ``prediction_sample`` rows of the reference and
    of each window scored by the model as it is at the test). ``features=None`` watches
    every feature the model learns from. Bad values are refused here, before anything runs.

    Examples
    --------
    >>> DriftSpec(features=("price",), window=2000).window
    2000
    >>> DriftSpec(policy="rest")
    Traceback (most recent call last):
    ...
    fusionkit.errors.FusionError: unknown drift policy 'rest': choose None, 'reset' or 'rollback'. Did you mean 'reset'?
    """

    features: tuple[str, ...] | None = None
    reference: str | int | pd.DataFrame = "first 10000 events"
    window: int = 5000
    psi_alarm: float = 0.2
    ks_alpha: float = 0.01
    concept: str | Any | None = "adwin"
    policy: str | None = None
    categorical: tuple[str, ...] | None = None
    sliding_reference: bool = False
    predictions: bool = True
    concept_params: dict[str, Any] | None = None
    prediction_sample: int = 500
    token: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False)

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy not in POLICIES:
            hint = did_you_mean(self.policy, POLICIES)
            raise FusionError(f"unknown drift policy {self.policy!r}: choose None, 'reset' or "
                              f"'rollback'.{hint}")
        for name in ("features", "categorical"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise FusionError(f"{name} must be a list of column names, not the string "
                                  f"{value!r}; write [{value!r}]")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        try:  # the window settings (WindowSettings, whose errors are plain), the detector
            self.monitor("")
        except SettingsError:
            raise
        except (TypeError, ValueError) as exc:
            raise FusionError(f"watch_drift: {exc}") from None

    def monitor(self, stage: str, features: list[str] | None = None) -> DriftMonitor:
        """A fresh :class:`DriftMonitor` for this spec."""
        feats = list(self.features) if self.features is not None else features
        return DriftMonitor(
            feats, self.reference, self.window, self.psi_alarm, self.ks_alpha,
            self.concept, self.sliding_reference,
            list(self.categorical) if self.categorical is not None else None,
            stage=stage, concept_params=self.concept_params,
            prediction_sample=self.prediction_sample,
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (a DataFrame reference as its length)."""
        ref = self.reference
        return {"features": list(self.features) if self.features is not None else None,
                "reference": f"DataFrame of {len(ref)} events" if isinstance(ref, pd.DataFrame)
                else ref, "window": self.window, "psi_alarm": self.psi_alarm,
                "ks_alpha": self.ks_alpha, "concept": self.concept, "policy": self.policy,
                "prediction_sample": self.prediction_sample if self.predictions else None}

    def unknown_column(self, features: list[str] | None, sample: pd.DataFrame | None,
                       stream: str) -> str | None:  # fmt: skip
        """Why this watch cannot run on a stream whose output looks like ``sample`` (a
        watched or categorical column it does not have), or ``None``. ``features`` are the
        stage's model features, watched when the spec names none."""
        watched = list(self.features) if self.features is not None else features
        if sample is None or watched is None:
            return None
        columns = [c for c in sample.columns if not str(c).startswith("_")]
        for name in [*watched, *(self.categorical or ())]:
            if name not in sample.columns:
                hint = did_you_mean(name, columns)
                return (f"cannot watch {name!r}: stream {stream!r} has no such column; its "
                        f"columns are {columns}.{hint}")
        return None
