"""Models compared on the same traffic: online accuracy and log loss per model, and their
difference from the primary with a 95% confidence interval (``fk.compare``).

A train stage learning a serve stage's log joined with outcomes sees a row per model that
answered a request: the primary's (or a canary's) and each shadow's, under the request's id.
:class:`Comparison` keeps, per model, sums of the correct answers and of the log losses and
their squares; and, for a shadow, the sums of its per-request differences from the primary
on the same request ids (a paired comparison: the traffic's own variation cancels out).

Intervals (:func:`interval`): normal approximations at 95% (z = 1.96), the mean difference
plus or minus z standard errors. A shadow against the primary is *paired*: the standard
error is the sample standard deviation of the per-request differences over sqrt(n). A canary
against the primary answers other requests: *Welch*'s standard error
sqrt(s1^2/n1 + s2^2/n2). The verdict (:func:`verdict`) says "not enough data" until the
interval excludes zero (and below ``MIN_N`` rows), and always states the sample size.

Requests a shadow answered whose primary row has not been seen wait in a bounded table
(``PENDING`` request ids, the oldest forgotten first); it is not in the checkpoints, so a
rollback forgets at most the pairs still waiting.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pandas as pd

from fusionkit.training.served_scores import row_scores

REQUEST_ID, ROLE, MODEL, PREDICTION, PROBA = "request_id", "_role", "_model", "_prediction", "_proba"
Z95 = 1.959963984540054
MIN_N = 30  # rows (pairs) below which no verdict is given, whatever the interval
PENDING = 50_000


class Comparison:
    """Per model sums ``[n, correct, n_proba, loss, loss^2]`` and, per (shadow, primary),
    paired sums ``[n, d_correct, d_correct^2, n_proba, d_loss, d_loss^2]`` (shadow minus
    primary).

    Examples
    --------
    >>> c = Comparison("y")
    >>> c.add(pd.DataFrame({"request_id": ["a", "a", "b", "b"], "y": [1, 1, 0, 0],
    ...     "_model": ["m", "s", "m", "s"], "_role": ["primary", "shadow"] * 2,
    ...     "_prediction": [1, 0, 0, 0], "_proba": [0.8, 0.4, 0.3, 0.1]}))
    >>> c.models["m"][:3], c.pairs[("s", "m")][:3]
    ([2, 2, 2], [2, -1, 1])
    """

    def __init__(self, label: str, positive: Any = True, pending: int = PENDING):
        self.label = label
        self.positive = positive
        self.limit = pending
        self.models: dict[str, list[float]] = {}
        self.pairs: dict[tuple[str, str], list[float]] = {}
        self._waiting: OrderedDict[str, dict[str, tuple[str, bool, float]]] = OrderedDict()

    @staticmethod
    def applies(columns: Any) -> bool:
        """Whether examples with these columns are served rows naming their model's role."""
        return all(c in columns for c in (REQUEST_ID, ROLE, MODEL, PREDICTION))

    def add(self, examples: pd.DataFrame) -> None:
        """Score a batch of served rows joined with their labels."""
        if (not len(examples) or not self.applies(examples.columns)
                or self.label not in examples.columns):
            return
        keep = examples[PREDICTION].notna() & examples[self.label].notna()
        rows = examples[keep.to_numpy()]
        if not len(rows):
            return
        correct, loss = row_scores(rows, self.label, self.positive)
        for rid, model, role, ok, lo in zip(rows[REQUEST_ID].tolist(),
                                            rows[MODEL].astype(str).tolist(),
                                            rows[ROLE].astype(str).tolist(), correct.tolist(),
                                            loss.tolist(), strict=True):
            s = self.models.setdefault(model, [0, 0, 0, 0.0, 0.0])
            s[0] += 1
            s[1] += int(ok)
            if math.isfinite(lo):
                s[2] += 1
                s[3] += lo
                s[4] += lo * lo
            if role in ("primary", "shadow"):
                self._pair(rid, model, role, bool(ok), lo)

    def _pair(self, rid: str, model: str, role: str, ok: bool, loss: float) -> None:
        entry = self._waiting.get(rid)
        if entry is None:
            entry = self._waiting[rid] = {}
            if len(self._waiting) > self.limit:
                self._waiting.popitem(last=False)
        entry[model] = (role, ok, loss)
        primary = next(((m, v) for m, v in entry.items() if v[0] == "primary"), None)
        if primary is None:
            return
        pm, (_, p_ok, p_loss) = primary
        for m in [m for m, v in entry.items() if v[0] == "shadow"]:
            _, s_ok, s_loss = entry.pop(m)
            s = self.pairs.setdefault((m, pm), [0, 0, 0, 0, 0.0, 0.0])
            d = int(s_ok) - int(p_ok)
            s[0] += 1
            s[1] += d
            s[2] += d * d
            if math.isfinite(s_loss) and math.isfinite(p_loss):
                dl = s_loss - p_loss
                s[3] += 1
                s[4] += dl
                s[5] += dl * dl

    def rows(self) -> dict[str, Any]:
        """The sums, as plain data (a train stage's report carries them)."""
        return {"models": {m: list(s) for m, s in self.models.items()},
                "pairs": [[m, p, *s] for (m, p), s in self.pairs.items()]}

    def get_state(self) -> dict[str, Any]:
        return self.rows()

    def set_state(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.models = {m: list(s) for m, s in state.get("models", {}).items()}
        self.pairs = {(p[0], p[1]): list(p[2:]) for p in state.get("pairs", [])}
        self._waiting = OrderedDict()


def mean_sd(n: float, total: float, squares: float) -> tuple[float, float]:
    """Mean and sample standard deviation from a count, a sum and a sum of squares.

    >>> mean_sd(4, 10.0, 30.0)
    (2.5, 1.2909944487358056)
    """
    if n < 1:
        return math.nan, math.nan
    mean = total / n
    if n < 2:
        return mean, math.nan
    var = max(0.0, (squares - n * mean * mean) / (n - 1))
    return mean, math.sqrt(var)


def interval(diff: float, se: float) -> tuple[float, float]:
    """The 95% normal interval ``diff +- 1.96 se``.

    >>> [round(x, 3) for x in interval(0.1, 0.05)]
    [0.002, 0.198]
    """
    if not math.isfinite(diff) or not math.isfinite(se):
        return math.nan, math.nan
    return diff - Z95 * se, diff + Z95 * se


def paired(n: float, total: float, squares: float) -> tuple[float, float, float]:
    """Mean difference and its 95% interval from paired sums (standard error sd/sqrt(n))."""
    mean, sd = mean_sd(n, total, squares)
    return (mean, *interval(mean, sd / math.sqrt(n) if n >= 2 else math.nan))


def welch(a: tuple[float, float, float], b: tuple[float, float, float]
          ) -> tuple[float, float, float]:
    """Difference of means ``a - b`` (each ``(n, sum, sum of squares)``) and its 95%
    interval with Welch's standard error sqrt(s_a^2/n_a + s_b^2/n_b)."""
    ma, sa = mean_sd(*a)
    mb, sb = mean_sd(*b)
    if a[0] < 2 or b[0] < 2:
        return ma - mb, math.nan, math.nan
    diff = ma - mb
    return (diff, *interval(diff, math.sqrt(sa * sa / a[0] + sb * sb / b[0])))


def verdict(model: str, primary: str, metric: str, diff: float, low: float, high: float,
            n: int, kind: str) -> str:
    """A plain sentence: which model is better on ``metric`` (``log loss``: lower is better;
    ``accuracy``: higher), by how much, on how many rows, or "not enough data".

    >>> verdict("tree", "ctr", "log loss", -0.05, -0.08, -0.02, 900, "paired")
    'tree is better than ctr: log loss -0.0500 (95% CI -0.0800 to -0.0200), 900 paired requests'
    >>> verdict("tree", "ctr", "accuracy", 0.01, -0.02, 0.04, 900, "paired")
    'not enough data: tree vs ctr accuracy +0.0100 (95% CI -0.0200 to 0.0400), 900 paired requests'
    """
    what = (f"{n} paired requests" if kind == "paired"
            else f"{n} requests of this model (unpaired, Welch interval)")
    ci = f"(95% CI {low:.4f} to {high:.4f})"
    if n < MIN_N or not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return f"not enough data: {model} vs {primary} {metric} {diff:+.4f} {ci}, {what}"
    better = diff < 0 if metric == "log loss" else diff > 0
    word = "better" if better else "worse"
    return f"{model} is {word} than {primary}: {metric} {diff:+.4f} {ci}, {what}"


COLUMNS = ["model", "role", "requests", "accuracy", "log_loss", "vs", "interval", "n_compared",
           "accuracy_diff", "accuracy_low", "accuracy_high", "log_loss_diff", "log_loss_low",
           "log_loss_high", "verdict"]


def compare_frame(models: dict[str, list[float]], pairs: dict[tuple[str, str], list[float]],
                  primary: str, roles: dict[str, str]) -> pd.DataFrame:
    """One row per model: ``requests`` (served rows with a known label), ``accuracy``,
    ``log_loss``; for the others, the difference from ``primary`` (other minus primary) of
    each, with its 95% interval, ``paired`` on the same requests for a shadow (or a retired
    model, when pairs were seen) and ``welch`` for a canary (on all its rows, as a shadow
    too if it was one) or without pairs, and the ``verdict``, on log loss when the models give
    probabilities, else on accuracy."""
    out = []
    base = models.get(primary)
    for model in [primary, *sorted(m for m in models if m != primary)]:
        s = models.get(model)
        if s is None:
            continue
        n, correct, n_proba, loss, loss2 = s
        row: dict[str, Any] = {"model": model, "role": roles.get(model, "retired"),
                               "requests": int(n), "accuracy": correct / n if n else math.nan,
                               "log_loss": loss / n_proba if n_proba else math.nan}
        if model != primary and base is not None:
            # a canary is judged on the rows it answers (welch), even if it was a shadow
            # before and has pairs from then
            p = pairs.get((model, primary)) if roles.get(model) != "canary" else None
            if p is not None and p[0] >= 2:
                kind, n_cmp = "paired", int(p[0])
                acc = paired(p[0], p[1], p[2])
                ll = paired(p[3], p[4], p[5]) if p[3] >= 2 else (math.nan,) * 3
            else:
                kind, n_cmp = "welch", int(n)
                acc = welch((n, correct, correct), (base[0], base[1], base[1]))
                ll = (welch((n_proba, loss, loss2), (base[2], base[3], base[4]))
                      if n_proba and base[2] else (math.nan,) * 3)
            metric, d = ("log loss", ll) if math.isfinite(ll[0]) else ("accuracy", acc)
            row.update(vs=primary, interval=kind, n_compared=n_cmp, accuracy_diff=acc[0],
                       accuracy_low=acc[1], accuracy_high=acc[2], log_loss_diff=ll[0],
                       log_loss_low=ll[1], log_loss_high=ll[2],
                       verdict=verdict(model, primary, metric, *d, n_cmp, kind))
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)


def rollback_due(row: Any, min_n: int = MIN_N) -> bool:
    """Whether a canary's row of ``compare_frame`` says it is worse than the primary with
    confidence: its log loss higher, the whole 95% interval of the difference above zero,
    on at least ``min_n`` rows. An equal canary rolls back in 2.5% of the checks at most
    (the upper tail of a two-sided 95% interval).

    >>> rollback_due({"role": "canary", "n_compared": 500, "log_loss_low": 0.01})
    True
    >>> rollback_due({"role": "canary", "n_compared": 500, "log_loss_low": -0.01})
    False
    """
    low = row.get("log_loss_low")
    return (row.get("role") == "canary" and (row.get("n_compared") or 0) >= min_n
            and low is not None and math.isfinite(low) and low > 0)


def sum_comparisons(reports: list[dict[str, Any]]) -> tuple[dict, dict]:
    """Add up ``Comparison.rows()`` of several actors (of one train stage)."""
    models: dict[str, list[float]] = {}
    pairs: dict[tuple[str, str], list[float]] = {}
    for rep in reports:
        for m, s in (rep or {}).get("models", {}).items():
            acc = models.setdefault(m, [0] * len(s))
            for i, v in enumerate(s):
                acc[i] += v
        for p in (rep or {}).get("pairs", []):
            acc = pairs.setdefault((p[0], p[1]), [0] * (len(p) - 2))
            for i, v in enumerate(p[2:]):
                acc[i] += v
    return models, pairs


def scored_comparison(scored: dict[str, Any], primary: str, roles: dict[str, str]
                      ) -> pd.DataFrame:
    """``compare_frame`` of the models ``roles`` names (``primary`` among them), from
    ``scored``: ``{train stage: its actors' Comparison.rows()}`` (in the order to prefer on
    a tie). Several train stages may learn one served log joined with outcomes: the one that
    scored the most rows of these models answers (``scored_by`` in the frame's ``attrs``).
    An empty frame until one scored any. ``fk.compare`` and the dashboard both read it.

    >>> rows = {"models": {"m": [4, 3, 0, 0.0, 0.0], "s": [4, 2, 0, 0.0, 0.0]}, "pairs": []}
    >>> f = scored_comparison({"a": [rows], "b": []}, "m", {"m": "primary", "s": "canary"})
    >>> f.attrs["scored_by"], f["requests"].tolist(), f["accuracy"].tolist()
    ('a', [4, 4], [0.75, 0.5])
    """
    best, best_n = None, 0
    for stage, reports in scored.items():
        models, pairs = sum_comparisons(list(reports or ()))
        n = sum(s[0] for m, s in models.items() if m in roles)
        if n > best_n:
            best, best_n = (stage, models, pairs), n
    if best is None:
        return pd.DataFrame(columns=COLUMNS)
    stage, models, pairs = best
    frame = compare_frame(models, pairs, primary, roles)
    frame.attrs["scored_by"] = stage
    return frame
