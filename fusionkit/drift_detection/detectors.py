"""River's concept drift detectors, made by name (with fusionkit's defaults where River's
do not fit an error stream)."""

from __future__ import annotations

import re
from typing import Any

from river import base as river_base
from river import drift as river_drift

from fusionkit._suggest import closest

__all__ = ["DETECTORS", "DETECTOR_DEFAULTS", "make_detector"]


DETECTORS: dict[str, type] = {
    "adwin": river_drift.ADWIN,
    "ddm": river_drift.binary.DDM,
    "eddm": river_drift.binary.EDDM,
    "hddm_a": river_drift.binary.HDDMA,
    "hddm_w": river_drift.binary.HDDMW,
    "fhddm": river_drift.binary.FHDDM,
    "pagehinkley": river_drift.PageHinkley,
    "kswin": river_drift.KSWIN,
}
# fusionkit's defaults where River's do not fit an error stream (see ConceptDriftMonitor);
# KSWIN samples its window at random: seeded, its alarms are the same on every run and on
# a replay from a checkpoint (unseeded, 2 runs in 131 of one error stream raised none)
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {"pagehinkley": {"mode": "up"},
                                                "kswin": {"seed": 0}}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_BY_KEY = {_key(k): k for k in DETECTORS} | {"ph": "pagehinkley"}


def make_detector(detector: str | Any = "adwin", **params: Any) -> Any:
    """A fresh River drift detector by name (case, ``_`` and ``-`` ignored), or a clone.

    >>> type(make_detector("HDDM_A", drift_confidence=1e-4)).__name__
    'HDDMA'
    """
    if isinstance(detector, str):
        name = _BY_KEY.get(_key(detector))
        if name is None:
            close = closest(_key(detector), _BY_KEY)
            hint = f" Did you mean {_BY_KEY[close]!r}?" if close is not None else ""
            raise ValueError(
                f"unknown drift detector {detector!r}: choose one of {', '.join(DETECTORS)}.{hint}"
            )
        try:
            return DETECTORS[name](**{**DETECTOR_DEFAULTS.get(name, {}), **params})
        except TypeError as e:
            raise ValueError(f"bad parameter for drift detector {name!r}: {e}") from None
    if isinstance(detector, (river_base.DriftDetector, river_base.BinaryDriftDetector)):
        if params:
            raise ValueError("detector parameters go with a detector name, not an instance")
        return detector.clone()
    raise TypeError(f"detector must be a name or a River drift detector, got {detector!r}")
