"""Which model answers a row: the primary, a canary by its share, and the shadows beside.

A serve stage answers with its primary model; ``canary={"ctr-tree": 0.1}`` sends a share of
the rows to other models, and ``shadow=["ctr-tree"]`` has other models answer every request
too, off the response path, into the served log only. With ``sticky="user_id"`` a row goes
where the stable hash of its ``user_id`` falls (:func:`bucket`), so a user sees one model for
as long as the shares stay; raising a share moves users only from the primary to the canary.
Without a sticky key (or a row without it), each row draws at random.

A :class:`Routing` is plain data: the replicas hold one and swap it whole for a new one
(``fk.canary``, ``fk.promote``), so a request is routed by one routing only.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fusionkit.errors import FusionError

PRIMARY, CANARY, SHADOW = "primary", "canary", "shadow"


def bucket(key: Any) -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of its BLAKE2b digest (of ``str(key)``,
    so ``7`` and ``"7"`` fall together), the same in every process and run (Python's own
    ``hash`` of a string is salted per process).

    >>> bucket("u1") == bucket("u1"), 0 <= bucket(42) < 1, bucket(7) == bucket("7")
    (True, True, True)
    """
    digest = hashlib.blake2b(str(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Routing:
    """The models of a serve stage and who answers what: ``primary`` answers what no canary
    takes; ``canary`` is ``((model, share), ...)`` (shares of the rows, summing to at most 1);
    ``shadow`` models answer every request beside, into the log only; ``sticky`` is the
    column whose stable hash routes a row.

    >>> r = Routing("ctr", canary=(("tree", 0.5),), sticky="user_id")
    >>> r.pick({"user_id": "u1"}) == r.pick({"user_id": "u1"}), r.models
    (True, ('ctr', 'tree'))
    >>> r.role("tree"), r.role("ctr")
    ('canary', 'primary')
    """

    primary: str
    canary: tuple[tuple[str, float], ...] = ()
    shadow: tuple[str, ...] = ()
    sticky: str | None = None

    def __post_init__(self) -> None:
        check_routing(self.primary, self.canary, self.shadow, self.sticky)

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the stage needs loaded: the primary, the canaries, the shadows."""
        return (self.primary, *(m for m, _ in self.canary), *self.shadow)

    @property
    def answering(self) -> tuple[str, ...]:
        """The models that answer clients: the primary and the canaries (a replica holds
        these; its shadow worker holds the shadows)."""
        return (self.primary, *(m for m, _ in self.canary))

    def role(self, model: str) -> str:
        if model == self.primary:
            return PRIMARY
        return SHADOW if model in self.shadow else CANARY

    def roles(self) -> dict[str, str]:
        """Each model's role, as ``fk.compare`` names it: ``{model: primary | canary |
        shadow}``."""
        return {m: self.role(m) for m in self.models}

    def pick(self, row: Any, draw: float | None = None) -> str:
        """The model that answers ``row`` (a record): by the bucket of its sticky key, or by
        ``draw`` (default: a random number) without one."""
        if not self.canary:
            return self.primary
        key = row.get(self.sticky) if self.sticky is not None and isinstance(row, dict) else None
        x = bucket(key) if key is not None else (random.random() if draw is None else draw)
        edge = 0.0
        for model, share in self.canary:
            edge += share
            if x < edge:
                return model
        return self.primary

    def with_share(self, shares: Mapping[str, float]) -> Routing:
        """This routing with the canaries' shares set to ``shares`` (a share of 0 removes
        the canary; a model not yet a canary becomes one)."""
        merged = dict(self.canary)
        merged.update(shares)
        canary = tuple((m, float(s)) for m, s in merged.items() if s > 0)
        shadow = tuple(m for m in self.shadow if m not in merged or merged[m] <= 0)
        return Routing(self.primary, canary, shadow, self.sticky)

    def promoted(self, model: str) -> Routing:
        """``model`` (a canary or a shadow) answers every request; the old primary and the
        others are dropped."""
        if model not in self.models or model == self.primary:
            others = ", ".join(m for m in self.models if m != self.primary) or "none"
            raise FusionError(f"cannot promote {model!r}: it is not a canary or shadow of this "
                              f"stage (they are: {others})")
        return Routing(model, (), (), self.sticky)

    def describe(self) -> dict[str, Any]:
        return {"primary": self.primary, "canary": dict(self.canary),
                "shadow": list(self.shadow), "sticky": self.sticky}


def check_routing(primary: str, canary: Iterable[tuple[str, float]], shadow: Sequence[str],
                  sticky: str | None) -> None:
    """Refuse a routing a user could not have meant, with a sentence saying why."""
    seen = {primary}
    total = 0.0
    for model, share in canary:
        if not isinstance(model, str) or not model:
            raise FusionError(f"canary models are names of train stages, got {model!r}")
        if (isinstance(share, bool) or not isinstance(share, (int, float))
                or not 0 < share <= 1):
            raise FusionError(f"canary {model!r}: its share must be a fraction of the rows "
                              f"in (0, 1], e.g. 0.1, got {share!r}")
        if model in seen:
            raise FusionError(f"{model!r} is named twice among the primary and canary models")
        seen.add(model)
        total += share
    if total > 1 + 1e-9:
        raise FusionError(f"the canary shares add up to {total:g}: they are shares of the "
                          "rows, at most 1 together")
    for model in shadow:
        if not isinstance(model, str) or not model:
            raise FusionError(f"shadow models are names of train stages, got {model!r}")
        if model in seen:
            raise FusionError(f"{model!r} cannot be a shadow and also answer (primary or "
                              "canary): name it once")
        seen.add(model)
    if sticky is not None and (not isinstance(sticky, str) or not sticky):
        raise FusionError(f"sticky is the name of a request column (e.g. 'user_id'), "
                          f"got {sticky!r}")


def routing_of(spec: Any) -> Routing:
    """A serve stage's routing as its definition (a ``ServeSpec``) gives it: ``fk.canary``
    and ``fk.promote`` record theirs in the definition too."""
    return Routing(spec.model, tuple(spec.canary), tuple(spec.shadow), spec.sticky)


def canary_pairs(canary: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    """``fk.serve``'s ``canary`` dict as the routing's pairs (checked by ``Routing``)."""
    if canary is None:
        return ()
    if not isinstance(canary, Mapping):
        raise FusionError(f"canary is a dict of model -> share of the rows, e.g. "
                          f"{{'ctr-tree': 0.1}}, got {type(canary).__name__}")
    return tuple((m, s) for m, s in canary.items())
