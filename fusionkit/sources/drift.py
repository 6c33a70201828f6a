"""Scheduled drift for the synthetic source: when a feature or the label function changes.

A drift is a frozen record of *what* changes and *when*. ``at`` is either an event count
(``int``, an offset from the start of the source) or event time from the start of the
source (``float`` seconds, or a string such as ``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"``).
``duration`` has the same two forms and makes the change gradual: over that span the old
and the new behaviour are mixed linearly, so drift detectors can be tested on both sudden
and slow changes. The source turns times into offsets with its own event rate, and lists
the result in ``drift_points()`` so plots can mark them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ConceptDrift",
    "DriftPoint",
    "FeatureDrift",
    "concept_drift",
    "feature_drift",
    "parse_seconds",
    "to_offset",
]

When = int | float | str

_UNITS = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-z]+)\s*$")


def parse_seconds(text: str) -> float:
    """Seconds in a duration string: ``"30s"``, ``"1.5m"``, ``"500ms"``, ``"2h"``.

    >>> parse_seconds("1.5m")
    90.0
    """
    match = _DURATION.match(text.lower())
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(
            f"cannot read {text!r} as a duration: use a number and one of "
            f"{', '.join(_UNITS)} (e.g. '30s'), a float of seconds, or an int event count"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def _check_when(value: Any, what: str) -> None:
    """Refuse values that are neither an event count nor a time (caught at construction)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | np.integer):
        raise TypeError(f"{what} must be an int event count, float seconds or '30s', not {value!r}")
    seconds = parse_seconds(value) if isinstance(value, str) else float(value)
    if not np.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be finite and >= 0, not {value!r}")


def to_offset(value: When, events_per_second: float) -> int:
    """The event offset that ``value`` names at ``events_per_second`` of event time.

    ``int`` is already an offset; ``float`` and strings are seconds from the start.

    >>> to_offset(1000, 50.0), to_offset(2.5, 100.0), to_offset("1m", 10.0)
    (1000, 250, 600)
    """
    _check_when(value, "a drift time")
    if isinstance(value, int | np.integer):
        return int(value)
    seconds = parse_seconds(value) if isinstance(value, str) else float(value)
    return int(round(seconds * events_per_second))


@dataclass(frozen=True)
class FeatureDrift:
    """A change in the distribution of one input feature (covariate shift).

    For a numeric feature, ``shift`` moves its mean by that many of the feature's standard
    deviations and ``scale`` multiplies its spread; for a categorical feature, ``probs``
    gives the new distribution over its categories (categories left out share what
    remains in their old proportions). Values are absolute: after the drift the feature
    follows the new distribution, whatever earlier drifts did. The label function is
    unchanged, so a good model stays good; only the inputs move.

    Examples
    --------
    >>> FeatureDrift("price", at=5000, shift=1.0).shift
    1.0
    >>> FeatureDrift("device", at="30s", probs={"mobile": 0.8}).probs
    (('mobile', 0.8),)
    """

    feature: str
    at: When
    shift: float = 0.0
    scale: float = 1.0
    probs: Mapping[Any, float] | tuple[tuple[Any, float], ...] | None = None
    duration: When = 0

    def __post_init__(self) -> None:
        _check_when(self.at, "FeatureDrift.at")
        _check_when(self.duration, "FeatureDrift.duration")
        if not np.isfinite(self.shift) or not np.isfinite(self.scale) or self.scale < 0:
            raise ValueError(f"FeatureDrift needs a finite shift and scale >= 0, got {self!r}")
        if self.probs is not None:
            pairs = tuple(self.probs.items() if isinstance(self.probs, Mapping) else self.probs)
            if not pairs or any(not np.isfinite(p) or p < 0 for _, p in pairs):
                raise ValueError(f"probs must be non-empty and >= 0, got {self.probs!r}")
            object.__setattr__(self, "probs", tuple((k, float(p)) for k, p in pairs))
            if self.shift != 0.0 or self.scale != 1.0:
                raise ValueError(
                    "give probs (categorical feature) or shift/scale (numeric), not both"
                )

    def describe(self) -> str:
        """One line for plots and status tables."""
        if self.probs is not None:
            change = ", ".join(f"{k}={p:.2f}" for k, p in self.probs)
        else:
            change = f"mean {self.shift:+g} std, spread x{self.scale:g}"
        return f"{self.feature}: {change}"


@dataclass(frozen=True)
class ConceptDrift:
    """A change in how the label depends on the features (real concept drift).

    After it, the effect of every feature on the label is reversed while the base rate
    stays about the same, so a model trained before the drift becomes clearly worse.
    A second concept drift restores the original relation (a recurring concept).

    Examples
    --------
    >>> ConceptDrift(at=10_000, duration=2_000).duration
    2000
    """

    at: When
    duration: When = 0

    def __post_init__(self) -> None:
        _check_when(self.at, "ConceptDrift.at")
        _check_when(self.duration, "ConceptDrift.duration")

    def describe(self) -> str:
        """One line for plots and status tables."""
        return "label function reversed"


class DriftPoint(NamedTuple):
    """Where a scheduled drift starts: offset, ``"feature"`` or ``"concept"``, and what."""

    offset: int
    kind: str
    description: str


def feature_drift(feature: str, at: When, **kwargs: Any) -> FeatureDrift:
    """Shorthand for :class:`FeatureDrift`."""
    return FeatureDrift(feature, at, **kwargs)


def concept_drift(at: When, duration: When = 0) -> ConceptDrift:
    """Shorthand for :class:`ConceptDrift`."""
    return ConceptDrift(at, duration)


def ramp(offsets: np.ndarray, start: int, duration: int) -> np.ndarray:
    """How far each offset is into a drift: 0 before ``start``, 1 once fully in effect."""
    if duration <= 0:
        return (offsets >= start).astype(np.float64)
    return np.clip((offsets - start + 1) / duration, 0.0, 1.0)
