"""How the served predictions did: accuracy and log loss per model version, online.

A join whose left input is a serve stage's log (``fk.serve(..., log="served")``) makes
examples of the rows *as they were served*, and the train stage that learns them scores
them too: each carries the model's answer
(``_prediction``, ``_proba`` when the model gave one), the ``_model`` and ``_version``
that answered, and now the outcome (the join's label, or its default when none came).
:class:`ServedScores` keeps, per (model, version), how many such examples there were, how
many predictions matched their label, and the log loss of the probabilities: what users
actually received, next to the trainer's prequential accuracy (which scores each version
on the events it learns, not on the requests it answered).

Rows without a prediction or a version (answered before any version was live) are not
scored. The counts are sums, so scores kept apart add up (``scores_frame``), and the state
is plain numbers (it goes in the train stage's checkpoints).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from fusionkit.training.prequential import _log_losses

PREDICTION, PROBA, MODEL, VERSION = "_prediction", "_proba", "_model", "_version"
FIELDS = ("n", "correct", "n_proba", "loss")  # per (model, version): sums


class ServedScores:
    """Per (model, version) sums of served examples scored against their labels.

    Examples
    --------
    >>> s = ServedScores("clicked")
    >>> s.add(pd.DataFrame({"_prediction": [1, 0, 1], "_proba": [0.9, 0.2, 0.6],
    ...                     "_model": "ctr", "_version": [3, 3, 4], "clicked": [1, 1, 0]}))
    >>> s.frame()[["model", "version", "n", "accuracy"]].values.tolist()
    [['ctr', 3, 2, 0.5], ['ctr', 4, 1, 0.0]]
    """

    def __init__(self, label: str, positive: Any = True):
        self.label = label
        self.positive = positive
        self.sums: dict[tuple[str, int], list[float]] = {}

    @staticmethod
    def applies(columns: Any) -> bool:
        """Whether examples with these columns are served rows (a prediction and version)."""
        return PREDICTION in columns and VERSION in columns

    def add(self, examples: pd.DataFrame) -> None:
        """Score a batch of examples (served rows with their labels)."""
        if (not len(examples) or not self.applies(examples.columns)
                or self.label not in examples.columns):
            return
        version = pd.to_numeric(examples[VERSION], errors="coerce")
        keep = version.notna() & examples[PREDICTION].notna() & examples[self.label].notna()
        if not keep.any():
            return
        rows = examples[keep.to_numpy()]
        version = version[keep].astype("int64").to_numpy()
        model = (rows[MODEL].astype(str).to_numpy() if MODEL in rows.columns
                 else np.full(len(rows), "", dtype=object))
        correct, loss = row_scores(rows, self.label, self.positive)
        known = np.isfinite(loss)
        frame = pd.DataFrame({"model": model, "version": version, "n": 1, "correct": correct,
                              "n_proba": known, "loss": np.where(known, loss, 0.0)})
        for (m, v), g in frame.groupby(["model", "version"], sort=False):
            s = self.sums.setdefault((str(m), int(v)), [0, 0, 0, 0.0])
            s[0] += len(g)
            s[1] += int(g["correct"].sum())
            s[2] += int(g["n_proba"].sum())
            s[3] += float(g["loss"].sum())

    def rows(self) -> tuple[tuple[str, int, int, int, int, float], ...]:
        """The sums as plain tuples ``(model, version, n, correct, n_proba, loss)``."""
        return tuple((m, v, int(s[0]), int(s[1]), int(s[2]), float(s[3]))
                     for (m, v), s in sorted(self.sums.items()))

    def frame(self) -> pd.DataFrame:
        """One row per (model, version): examples, accuracy and mean log loss."""
        return scores_frame(self.rows())

    def get_state(self) -> dict[str, Any]:
        return {"rows": self.rows()}

    def set_state(self, state: dict[str, Any] | None) -> None:
        self.sums = {}
        for m, v, n, correct, n_proba, loss in (state or {}).get("rows", ()):
            self.sums[(m, v)] = [n, correct, n_proba, loss]


def row_scores(rows: pd.DataFrame, label: str, positive: Any = True
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per served row with its label: whether the prediction was right, and its log loss
    (NaN for a row served without a probability)."""
    truths = rows[label].tolist()
    correct = np.fromiter((p == y for p, y in zip(rows[PREDICTION].tolist(), truths,
                                                  strict=True)), dtype=bool, count=len(rows))
    proba = (pd.to_numeric(rows[PROBA], errors="coerce").to_numpy("float64")
             if PROBA in rows.columns else np.full(len(rows), np.nan))
    known = np.isfinite(proba)
    truth = np.fromiter((y == positive for y in truths), dtype=bool, count=len(rows))
    loss = np.full(len(rows), np.nan)
    loss[known] = _log_losses(truth[known], proba[known])
    return correct, loss


def sum_scores(rows: Any) -> dict[tuple[str, int], list[float]]:
    """Sum ``(model, version, n, correct, n_proba, loss)`` rows (of one train stage's actors,
    or several) per ``(model, version)``: ``[n, correct, n_proba, loss]``."""
    sums: dict[tuple[str, int], list[float]] = {}
    for m, v, n, correct, n_proba, loss in rows:
        s = sums.setdefault((m, int(v)), [0, 0, 0, 0.0])
        s[0] += n
        s[1] += correct
        s[2] += n_proba
        s[3] += loss
    return sums


def scores_frame(rows: Any) -> pd.DataFrame:
    """Sum ``(model, version, n, correct, n_proba, loss)`` rows (of one join's actors, or
    several joins) into one row per (model, version): ``n``, ``accuracy``, ``log_loss``
    (NaN without probabilities)."""
    columns = ["model", "version", "n", "accuracy", "log_loss"]
    out = [(m, v, int(n), correct / n if n else math.nan,
            loss / n_proba if n_proba else math.nan)
           for (m, v), (n, correct, n_proba, loss) in sorted(sum_scores(rows).items())]
    return pd.DataFrame(out, columns=columns)


def most_scored(served: dict[str, Any], model: str | None = None
                ) -> tuple[str, list[tuple]] | None:
    """Of ``served`` (``{train stage: its served rows}``, in the order to prefer on a tie),
    the train stage that scored the most served rows of ``model`` (of any model: ``None``),
    with those rows; ``None`` when none scored any. Several train stages may learn one
    served log joined with outcomes: each scores the same answers, so one is read."""
    best, best_n = None, -1
    for train, rows in served.items():
        mine = [tuple(r) for r in rows or () if model is None or r[0] == model]
        n = sum(r[2] for r in mine)
        if mine and n > best_n:
            best, best_n = (train, mine), n
    return best
