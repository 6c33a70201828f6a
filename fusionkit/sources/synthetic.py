"""A synthetic click stream: ad impressions with features and a ``clicked`` label.

The generator exists so that a whole pipeline can be built, tested and demonstrated with
no data at hand: the features look like an ad click-through problem (a few numeric, a few
categorical, a many-valued ``user_id`` to key by), the label carries enough signal for
an online logistic regression to beat the majority class, and drift can be scheduled at
known offsets so detectors and dashboards can be checked against the truth.

Rows are a pure function of ``(seed, offset)``: events are generated in fixed blocks, each
from its own random generator, so replaying from a checkpointed offset gives exactly the
same events however the reads were chunked.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fusionkit._clock import now
from fusionkit.batch import EVENT_TIME, OFFSET
from fusionkit.sources.base import Source
from fusionkit.sources.drift import ConceptDrift, DriftPoint, FeatureDrift, ramp, to_offset

__all__ = ["NOMINAL_RATE", "Synthetic"]

#: events per second of event time when a source has no ``rate``
NOMINAL_RATE = 10_000.0
#: events per generated block; part of the data's identity, changing it changes the rows
BLOCK = 4096
N_USERS = 100_000
_USER_STRIDE = 48_271  # coprime with N_USERS: scatters popularity ranks over the id space

# numeric features: name -> (location, spread, log-normal?) of value = f(loc + spread * z)
_NUMERIC = {
    "price": (3.0, 0.8, True),  # median 20
    "dwell": (1.5, 0.9, True),  # seconds, median 4.5
    "age": (38.0, 12.0, False),
}
_CATEGORICAL: dict[str, tuple[tuple[Any, ...], tuple[float, ...]]] = {
    "device": (("mobile", "desktop", "tablet"), (0.6, 0.3, 0.1)),
    "country": (
        ("US", "IN", "GB", "DE", "BR", "JP", "FR", "CA"),
        (0.30, 0.15, 0.10, 0.10, 0.10, 0.09, 0.08, 0.08),
    ),
    "position": ((1, 2, 3, 4, 5), (0.30, 0.25, 0.20, 0.15, 0.10)),
}
# the label function of the first concept: logit = intercept + sum of the effects below
_INTERCEPT = -2.0
_EFFECT = {
    "device": np.array([0.5, -0.6, -0.2]),
    "country": np.array([0.4, -0.5, 0.2, 0.0, -0.3, 0.3, -0.1, 0.1]),
    "position": np.array([1.2, 0.6, 0.0, -0.6, -1.2]),
    "price": -1.0,  # per std of log price
    "dwell": 1.8,  # per std of log dwell
    "age": -0.7,  # per std of age
    "hour": 0.25,  # amplitude of a daily cycle peaking at 20:00 UTC
    "user": 0.6,  # per-user affinity, learnable only with per-user state
}
for _name, (_, _probs) in _CATEGORICAL.items():  # centred, so reversing keeps the base rate
    _EFFECT[_name] = _EFFECT[_name] - np.dot(_EFFECT[_name], _probs)
FEATURES = ("user_id", "device", "country", "hour", "position", "price", "dwell", "age")


class Synthetic(Source):
    """Click-through events (``clicked`` 0/1) with scheduled feature and concept drift.

    Parameters
    ----------
    name
        Name of the stream, for status tables.
    rate
        Events per second the source actor paces to (``None``: as fast as taken). Event
        time advances by ``1 / rate`` per event (``1 / 10_000`` if ``rate`` is ``None``).
    seed
        The rows are a function of ``seed`` and the offset only.
    max_events
        ``read`` returns ``None`` after that many events; ``None`` = unbounded.
    drift
        :class:`FeatureDrift` and :class:`ConceptDrift` records; see ``drift_points()``.
    disorder
        Event times are jittered back by up to this many seconds (out-of-order arrival).
    start_time
        Event time of offset 0, seconds since the epoch; default: the clock at construction.
    batch_hint
        Events per ``read`` the source actor should ask for; ``None`` lets it choose.

    Examples
    --------
    >>> src = Synthetic(seed=1, max_events=6, start_time=0.0)
    >>> src.open()
    >>> batch = src.read(4)
    >>> list(batch.columns)  # doctest: +NORMALIZE_WHITESPACE
    ['user_id', 'device', 'country', 'hour', 'position', 'price', 'dwell', 'age', 'clicked',
     '_event_time', '_offset']
    >>> batch["_offset"].tolist(), len(src.read(4)), src.read(4)
    ([0, 1, 2, 3], 2, None)
    >>> src.seek(2)
    >>> bool(src.read(1)["price"].iloc[0] == batch["price"].iloc[2])
    True
    """

    label = "clicked"

    def __init__(
        self,
        name: str = "clicks",
        rate: float | None = 5000,
        seed: int = 0,
        max_events: int | None = None,
        drift: Iterable[FeatureDrift | ConceptDrift] = (),
        disorder: float = 0.0,
        start_time: float | None = None,
        batch_hint: int | None = None,
    ):
        if rate is not None and (isinstance(rate, bool) or not np.isfinite(rate) or rate <= 0):
            raise ValueError(
                f"rate must be a positive number of events per second or None, not {rate!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, not {seed!r}")
        if max_events is not None and (
            not isinstance(max_events, int | np.integer) or max_events < 0
        ):
            raise ValueError(f"max_events must be an int >= 0 or None, not {max_events!r}")
        if not np.isfinite(disorder) or disorder < 0:
            raise ValueError(f"disorder must be a number of seconds >= 0, not {disorder!r}")
        if batch_hint is not None and (
            not isinstance(batch_hint, int | np.integer) or batch_hint <= 0
        ):
            raise ValueError(f"batch_hint must be a positive int or None, not {batch_hint!r}")
        self.name = name
        self.rate = rate
        self.seed = int(seed)
        self.max_events = max_events
        self.drift = tuple(drift)
        self.disorder = float(disorder)
        self.start_time = float(now() if start_time is None else start_time)
        self.batch_hint = batch_hint
        self._event_rate = float(rate) if rate is not None else NOMINAL_RATE
        self._plan = [self._resolve(d) for d in self.drift]
        self._offset = 0
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    # -- the source protocol -------------------------------------------------------------

    def read(self, n: int) -> pd.DataFrame | None:
        """The next at most ``n`` events; ``None`` once ``max_events`` have been read."""
        if n < 0:
            raise ValueError(f"read needs n >= 0, not {n}")
        start, end = self._offset, self._offset + int(n)
        if self.max_events is not None:
            if start >= self.max_events:
                return None
            end = min(end, self.max_events)
        parts = []
        for block in range(start // BLOCK, -(-end // BLOCK)):
            lo, hi = max(start - block * BLOCK, 0), min(end - block * BLOCK, BLOCK)
            parts.append({k: v[lo:hi] for k, v in self._block(block).items()})
        if not parts:  # read(0): no rows, same columns
            parts.append({k: v[:0] for k, v in self._block(start // BLOCK).items()})
        self._offset = end
        return _frame(parts)

    def seek(self, offset: int) -> None:
        """Make the next ``read`` start at ``offset``; rows are the same as the first time."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        self._offset = int(offset)

    def close(self) -> None:
        self._cache.clear()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "Synthetic",
            "name": self.name,
            "rate": self.rate,
            "seed": self.seed,
            "offset": self._offset,
            "max_events": self.max_events,
            "drift": len(self.drift),
            "disorder": self.disorder,
            "batch_hint": self.batch_hint,
        }

    def drift_points(self) -> list[DriftPoint]:
        """Where each scheduled drift starts, in offset order, for markers on plots."""
        points = []
        for drift, (start, duration, _) in zip(self.drift, self._plan, strict=True):
            kind = "concept" if isinstance(drift, ConceptDrift) else "feature"
            text = drift.describe() + (f" (gradual over {duration} events)" if duration else "")
            points.append(DriftPoint(start, kind, text))
        return sorted(points, key=lambda p: p.offset)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    # -- generation ----------------------------------------------------------------------

    def _resolve(self, drift: FeatureDrift | ConceptDrift) -> tuple[int, int, Any]:
        """(start offset, duration in events, target) of a drift, checked against the schema."""
        if not isinstance(drift, FeatureDrift | ConceptDrift):
            raise TypeError(f"drift takes FeatureDrift and ConceptDrift records, not {drift!r}")
        start = to_offset(drift.at, self._event_rate)
        duration = to_offset(drift.duration, self._event_rate)
        if isinstance(drift, ConceptDrift):
            return start, duration, None
        name = drift.feature
        if name in _NUMERIC:
            if drift.probs is not None:
                raise ValueError(f"{name!r} is numeric: drift it with shift/scale, not probs")
            return start, duration, (drift.shift, drift.scale)
        if name not in _CATEGORICAL:
            known = ", ".join([*_NUMERIC, *_CATEGORICAL])
            raise ValueError(f"unknown drift feature {name!r}; features that can drift: {known}")
        if drift.probs is None:
            raise ValueError(f"{name!r} is categorical: drift it with probs={{category: p, ...}}")
        return start, duration, np.cumsum(_categorical_probs(name, dict(drift.probs)))

    def _block(self, block: int) -> dict[str, np.ndarray]:
        if block not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[block] = self._generate(block)
        return self._cache[block]

    def _generate(self, block: int) -> dict[str, np.ndarray]:
        """All columns of the events ``[block * BLOCK, (block + 1) * BLOCK)``."""
        rng = np.random.default_rng([self.seed, block, 0])
        offsets = np.arange(block * BLOCK, (block + 1) * BLOCK, dtype=np.int64)
        uniform = rng.random((5, BLOCK))  # user, device, country, position, label
        latent = dict(zip(_NUMERIC, rng.standard_normal((len(_NUMERIC), BLOCK)), strict=True))

        event_time = self.start_time + offsets / self._event_rate
        if self.disorder > 0:
            jitter = np.random.default_rng([self.seed, block, 1]).random(BLOCK)
            event_time = event_time - self.disorder * jitter
        hour = (np.floor(event_time / 3600.0) % 24).astype(np.int64)

        ranks = np.exp(uniform[0] * np.log(N_USERS + 1.0)).astype(np.int64)
        user_id = ((np.clip(ranks, 1, N_USERS) - 1) * _USER_STRIDE) % N_USERS

        codes = {}
        for i, (name, (_, probs)) in enumerate(_CATEGORICAL.items(), start=1):
            cdf = np.cumsum(probs)
            for drift, (start, duration, target) in zip(self.drift, self._plan, strict=True):
                if isinstance(drift, FeatureDrift) and drift.feature == name:
                    w = ramp(offsets, start, duration)[:, None]
                    if w.any():
                        cdf = (1 - w) * cdf + w * target
            if cdf.ndim == 1:
                codes[name] = np.searchsorted(cdf[:-1], uniform[i], side="right")
            else:
                codes[name] = (uniform[i][:, None] >= cdf[:, :-1]).sum(axis=1)

        z = {}
        for name, base in latent.items():
            z[name] = base
            for drift, (start, duration, target) in zip(self.drift, self._plan, strict=True):
                if isinstance(drift, FeatureDrift) and drift.feature == name:
                    w = ramp(offsets, start, duration)
                    if w.any():
                        z[name] = (1 - w) * z[name] + w * (base * target[1] + target[0])
        values = {}
        for name, (loc, spread, lognormal) in _NUMERIC.items():
            x = loc + spread * z[name]
            values[name] = np.exp(x) if lognormal else np.clip(np.rint(x), 18, 90).astype(np.int64)
        z["age"] = (values["age"] - _NUMERIC["age"][0]) / _NUMERIC["age"][1]

        affinity = ((user_id * 2_654_435_761) % 4096) / 4096.0 * 3.4641 - 1.732  # std 1
        effect = (
            _EFFECT["device"][codes["device"]]
            + _EFFECT["country"][codes["country"]]
            + _EFFECT["position"][codes["position"]]
            + _EFFECT["price"] * z["price"]
            + _EFFECT["dwell"] * z["dwell"]
            + _EFFECT["age"] * z["age"]
            + _EFFECT["hour"] * np.cos(2 * np.pi * (hour - 20) / 24)
            + _EFFECT["user"] * affinity
        )
        concept = np.zeros(BLOCK, dtype=np.int64)
        mix = None
        for drift, (start, duration, _) in zip(self.drift, self._plan, strict=True):
            if isinstance(drift, ConceptDrift):
                w = ramp(offsets, start, duration)
                if w.any():
                    if mix is None:
                        mix = np.random.default_rng([self.seed, block, 2])
                    concept = np.where(mix.random(BLOCK) < w, concept + 1, concept)
        sign = 1.0 - 2.0 * (concept % 2)
        p_click = 1.0 / (1.0 + np.exp(-(_INTERCEPT + sign * effect)))

        return {
            "user_id": user_id,
            "device": codes["device"],
            "country": codes["country"],
            "hour": hour,
            "position": codes["position"] + 1,
            "price": values["price"],
            "dwell": values["dwell"],
            "age": values["age"],
            "clicked": (uniform[4] < p_click).astype(np.int64),
            EVENT_TIME: event_time,
            OFFSET: offsets,
        }


def _categorical_probs(name: str, probs: dict[Any, float]) -> np.ndarray:
    """The full distribution a categorical drift asks for, in category order."""
    categories, base = _CATEGORICAL[name]
    unknown = [k for k in probs if k not in categories]
    if unknown:
        raise ValueError(
            f"{name!r} has no categories {unknown}; its categories are {list(categories)}"
        )
    given = sum(probs.values())
    missing = [i for i, c in enumerate(categories) if c not in probs]
    out = np.array([probs.get(c, 0.0) for c in categories], dtype=np.float64)
    if missing:
        if given > 1.0 + 1e-9:
            raise ValueError(f"probs for {name!r} sum to {given:g} > 1 with categories left out")
        rest = np.array([base[i] for i in missing])
        out[missing] = (1.0 - given) * rest / rest.sum()
    elif given <= 0:
        raise ValueError(f"probs for {name!r} sum to 0")
    return out / out.sum()


_STRINGS = {name: pa.array([str(c) for c in cats]) for name, (cats, _) in _CATEGORICAL.items()}


def _frame(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """One DataFrame from block slices, categories as ``str`` columns."""
    if len(parts) == 1:
        columns = dict(parts[0])
    else:
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    for name in ("device", "country"):
        columns[name] = pd.array(_STRINGS[name].take(pa.array(columns[name])), dtype="str")
    return pd.DataFrame(columns, copy=False)
