"""What the dashboard shows, kept as fixed-size windows of numpy floats.

:class:`DashboardState` takes monitor snapshots (``Monitor.snapshot``) and controller status
rows and keeps, per chart line, the points of the last ``window`` seconds; per stage, its
latest figures; the markers to draw (versions, rollbacks, pins, alarms, failures); and a
capped log. It knows nothing of widgets, so the update logic is tested on its own, and the
widgets only redraw what changed (each window counts its changes in ``version``).
"""

from __future__ import annotations

import html
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fusionkit._clock import now
from fusionkit.notebook.comparing import ComparisonFigures, comparison_figures

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
           "#ff9da7", "#bab0ac", "#e15759")
MARKER_KINDS = ("version", "rollback", "pin", "alarm", "failed")
QUIET_EVENTS = {"version": ("live", "published")}  # routine events the log leaves out
RECENT_METRICS = ("accuracy_recent", "mae_recent", "rmse_recent")
JOIN_FLOWS = ("joined", "timed_out", "late", "orphans")  # counts that only grow: with a rate
JOIN_COUNTS = ("pending", *JOIN_FLOWS, "lefts", "rights", "duplicates", "corrections",
               "overflow", "late_left", "unusable")
ONLINE_MIN_ROWS = 20  # newly scored served rows behind each point of an online accuracy line


class Window:
    """The last ``size`` points of one line, as float64 arrays; ``version`` counts changes.

    Examples
    --------
    >>> w = Window(3)
    >>> w.extend([1.0, 2.0], [10.0, 20.0]); w.extend([3.0, 4.0], [30.0, 40.0])
    >>> w.t.tolist(), w.y.tolist(), w.version
    ([2.0, 3.0, 4.0], [20.0, 30.0, 40.0], 2)
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"a window holds at least one point, got size={size}")
        self.size = size
        self.t = np.empty(0, dtype="float64")
        self.y = np.empty(0, dtype="float64")
        self.version = 0

    def extend(self, t: Any, y: Any) -> None:
        t = np.asarray(t, dtype="float64")
        y = np.asarray(y, dtype="float64")
        keep = np.isfinite(t)
        if not keep.any():
            return
        self.t = np.concatenate([self.t, t[keep]])[-self.size:]
        self.y = np.concatenate([self.y, y[keep]])[-self.size:]
        self.version += 1

    def trim(self, oldest: float) -> None:
        """Drop points older than ``oldest`` (seconds)."""
        if self.t.size and self.t[0] < oldest:
            keep = self.t >= oldest
            self.t, self.y = self.t[keep], self.y[keep]
            self.version += 1

    def last(self) -> float:
        finite = self.y[np.isfinite(self.y)]
        return float(finite[-1]) if finite.size else math.nan


@dataclass(frozen=True)
class Line:
    """One chart line: which chart, which stage it belongs to (its colour), its style, and
    whether the legend names it on its own (else only a stage's first line is named)."""

    chart: str
    stage: str
    label: str
    dash: str = "solid"
    legend: bool = False


@dataclass
class Marker:
    time: float
    kind: str
    stage: str
    label: str


@dataclass
class LogEntry:
    time: float
    stage: str
    text: str
    level: str = "info"  # info | warn | err


@dataclass
class JoinFigures:
    """A join stage's counts from its actors' reports (``JoinReport``), summed, with the
    rate per second of each growing count since the report before, and the label delay
    percentiles (seconds of event time from an impression to its outcome; NaN before the
    first match)."""

    time: float
    counts: dict[str, int]
    rates: dict[str, float] = field(default_factory=dict)
    label_delay_p50: float = math.nan
    label_delay_p99: float = math.nan


def join_figures(reports: list[dict[str, Any]], time: float,
                 before: JoinFigures | None = None) -> JoinFigures:
    """Sum a join stage's actor reports (``fk.infos(name)``) into its figures at ``time``.

    Rates are the growth of each of ``JOIN_FLOWS`` since ``before`` per second; a count
    that fell (the stage was defined again, or rolled back to a checkpoint) starts over, at
    no rate. The label delay percentiles are the worst actor's (the largest), which is the
    stage's own with one actor.

    >>> a = join_figures([{"joined": 10, "timed_out": 30, "label_delay_p50": 0.5}], 100.0)
    >>> b = join_figures([{"joined": 30, "timed_out": 70, "label_delay_p50": 0.4}], 102.0, a)
    >>> b.counts["joined"], b.rates["joined"], b.rates["timed_out"], b.label_delay_p50
    (30, 10.0, 20.0, 0.4)
    """
    counts = {k: int(sum(int(r.get(k) or 0) for r in reports)) for k in JOIN_COUNTS}
    rates: dict[str, float] = {}
    if before is not None and time > before.time:
        for k in JOIN_FLOWS:
            grown = counts[k] - before.counts.get(k, 0)
            rates[k] = grown / (time - before.time) if grown >= 0 else 0.0

    def worst(key: str) -> float:
        values = [float(r[key]) for r in reports
                  if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        return max(values) if values else math.nan

    return JoinFigures(time, counts, rates, worst("label_delay_p50"), worst("label_delay_p99"))


@dataclass(frozen=True)
class VersionScore:
    """How one model version's answers did as served: ``n`` served rows whose outcome was
    learned, the share predicted right, and the mean log loss (NaN without probabilities)."""

    version: int
    n: int
    accuracy: float
    log_loss: float


@dataclass(frozen=True)
class OnlineFigures:
    """A served model's online metrics (what ``fk.online_metrics(model)`` gives), from the
    served rows the train stage ``scored_by`` reported: per version, and over all versions
    (``n`` rows, ``correct`` of them)."""

    model: str
    scored_by: str
    versions: tuple[VersionScore, ...]
    n: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan


def online_figures(served: dict[str, Any]) -> dict[str, OnlineFigures]:
    """Per model served, its online metrics from the train stages' served rows
    ``(model, version, n, correct, n_proba, loss)`` (``served[train stage]``, as
    ``TrainReport.served`` and the status rows carry them). A model scored by several train
    stages takes the one that scored the most of its rows, as ``fk.online_metrics`` does.

    >>> f = online_figures({"learner": [("ctr", 1, 10, 9, 10, 2.0), ("ctr", 2, 30, 15, 0, 0.0)]})
    >>> f["ctr"].scored_by, f["ctr"].n, f["ctr"].accuracy
    ('learner', 40, 0.6)
    >>> [(s.version, s.n, s.accuracy, s.log_loss) for s in f["ctr"].versions]
    [(1, 10, 0.9, 0.2), (2, 30, 0.5, nan)]
    """
    # here, not at the top: served_scores brings River and SciPy (half a second), which a
    # dashboard with nothing served never needs
    from fusionkit.training.served_scores import most_scored, sum_scores

    ordered = dict(sorted(served.items()))  # on a tie, the first train stage by name
    out = {}
    for model in sorted({str(r[0]) for rows in served.values() for r in rows or ()}):
        best = most_scored(ordered, model)
        sums = sum_scores(best[1]) if best is not None else {}
        total = int(sum(s[0] for s in sums.values()))
        if not total:
            continue
        versions = tuple(VersionScore(v, int(n), correct / n if n else math.nan,
                                      loss / n_proba if n_proba else math.nan)
                         for (_, v), (n, correct, n_proba, loss) in sorted(sums.items()))
        out[model] = OnlineFigures(model, best[0], versions, total,
                                   int(sum(s[1] for s in sums.values())))
    return out


@dataclass
class StageView:
    """One stage's latest figures, from the controller's status and the monitor."""

    name: str
    kind: str
    status: str = "starting"
    parallelism: int = 1
    events: int = 0
    dead_letters: int = 0
    errors: int = 0
    rate: float = 0.0
    on: str | None = None
    error: str | None = None
    reason: str | None = None       # why a waiting or paused stage reads nothing
    url: str | None = None
    version: int | None = None      # serve: version answering; train: live version
    pinned: bool = False
    metric: str | None = None       # train: name of the prequential metric shown
    metric_value: float = math.nan
    p99_ms: float = math.nan
    source: str | None = None       # stream: what it reads
    join: JoinFigures | None = None  # join: its counts, rates and label delays
    online: OnlineFigures | None = None  # train: its model's answers as served, scored
    compare: ComparisonFigures | None = None  # serve, with canaries or shadows: fk.compare
    extra: dict[str, Any] = field(default_factory=dict)


class DashboardState:
    """Fixed windows of the last ``window`` seconds, fed by snapshots and status rows."""

    def __init__(self, window: float = 120.0, bucket: float = 0.5, log_cap: int = 200):
        if window <= 0:
            raise ValueError(f"window must be a positive number of seconds, got {window}")
        self.window = float(window)
        self.size = int(math.ceil(window / bucket)) + 8
        self.lines: dict[Line, Window] = {}
        self.stages: dict[str, StageView] = {}
        self.colours: dict[str, str] = {}
        self.markers: deque[Marker] = deque(maxlen=2000)
        self.markers_version: dict[str, int] = dict.fromkeys(MARKER_KINDS, 0)  # per kind
        self.log: deque[LogEntry] = deque(maxlen=log_cap)
        self.log_version = 0
        self.since: float | None = None
        self.now = now()
        self.ticks = 0
        self.new_versions: set[str] = set()  # train stages whose version list changed
        self.watching: set[str] = set()  # train stages with a drift watch (fk.watch_drift)
        self._online_base: dict[str, tuple[int, int]] = {}  # model: (n, correct) at its last point
        self._compared: dict[tuple[str, str], int] = {}  # (serve, model): requests at its last point

    # -- colours --------------------------------------------------------------------------
    def colour(self, stage: str) -> str:
        """The stage's colour, the same in the pipeline view, its card and every chart."""
        base = stage.split(":", 1)[0]
        if base not in self.colours:
            self.colours[base] = PALETTE[len(self.colours) % len(PALETTE)]
        return self.colours[base]

    # -- intake ---------------------------------------------------------------------------
    def _line(self, line: Line) -> Window:
        win = self.lines.get(line)
        if win is None:
            win = self.lines[line] = Window(self.size)
            self.colour(line.stage)
        return win

    def ingest_status(self, rows: list[dict[str, Any]], time: float | None = None) -> None:
        """Controller status rows (the rows ``fk.status()`` is made of): stages, status,
        counts, the served rows a train stage scored (its online metrics), and what a serve
        stage's models compare to (``fk.compare``)."""
        seen = set()
        for row in rows:
            name = row["name"]
            seen.add(name)
            self.colour(name)
            view = self.stages.get(name)
            if view is None or view.kind != row["kind"]:
                view = self.stages[name] = StageView(name, row["kind"])
            view.status = row.get("status") or view.status
            view.parallelism = int(row.get("parallelism") or 1)
            view.events = int(row.get("events") or 0)
            view.dead_letters = int(row.get("dead_letters") or 0)
            view.on = row.get("on")
            view.error = row.get("error")
            view.reason = row.get("reason")
            view.url = row.get("url")
            if view.kind == "table":
                view.extra["table"] = {k: row.get(k) for k in (
                    "keys_held", "lookups", "misses", "lookup_p99_ms", "staleness_p99_ms")}
        for gone in set(self.stages) - seen:
            del self.stages[gone]
        time = now() if time is None else time
        self._ingest_online({row["name"]: row["served"] for row in rows
                             if row.get("kind") == "train" and row.get("served")}, time)
        self._ingest_compare(rows, time)

    def _ingest_online(self, served: dict[str, Any], time: float) -> None:
        """Each served model's online metrics, on the card of the train stage of that name
        (the trainer whose prequential accuracy it sits next to) or else of the stage that
        scored them, and a dotted point on the accuracy chart each time at least
        ``ONLINE_MIN_ROWS`` more served rows were scored: the accuracy of those rows."""
        for view in self.stages.values():
            view.online = None
        for model, figures in online_figures(served).items():
            trainer = self.stages.get(model)
            view = trainer if trainer is not None and trainer.kind == "train" else \
                self.stages[figures.scored_by]
            view.online = figures
            n0, correct0 = self._online_base.get(model, (0, 0))
            if figures.n < n0 or figures.correct < correct0:  # scored again from scratch
                n0, correct0 = 0, 0
                self._online_base[model] = (0, 0)
            if figures.n - n0 >= ONLINE_MIN_ROWS:
                line = Line("accuracy", view.name, f"{model} online, as served", "dot", True)
                self._line(line).extend([time], [(figures.correct - correct0) / (figures.n - n0)])
                self._online_base[model] = (figures.n, figures.correct)

    def _ingest_compare(self, rows: list[dict[str, Any]], time: float) -> None:
        """Each serve stage's comparison of its models (``fk.compare``'s figures) on its
        view, and a point per model on the comparison charts each time more of its rows
        were scored: its accuracy and log loss over every row scored so far, which is what
        ``fk.compare`` said at that moment (its last point is what it says now)."""
        for view in self.stages.values():
            view.compare = None
        for stage, figures in comparison_figures(rows).items():
            self.stages[stage].compare = figures
            for s in figures.models:
                if self._compared.get((stage, s.model)) == s.requests:
                    continue
                self._compared[(stage, s.model)] = s.requests
                label = f"{stage}: {s.model} ({s.role})"
                self._line(Line("compare_accuracy", s.model, label)).extend([time], [s.accuracy])
                if math.isfinite(s.log_loss):
                    self._line(Line("compare_log_loss", s.model, label)).extend([time],
                                                                                [s.log_loss])

    def ingest_join(self, stage: str, reports: list[dict[str, Any]],
                    time: float | None = None) -> None:
        """A join stage's actor reports (``fk.infos(stage)``): its counts, their rates
        since the reports before, and its label delays (see :func:`join_figures`)."""
        view = self.stages.get(stage)
        if view is None or view.kind != "join":
            return
        time = now() if time is None else time
        view.join = join_figures(reports, time, view.join)

    def ingest_snapshot(self, snap: dict[str, Any]) -> None:
        """A monitor snapshot: new buckets of every series, freshness, events, rates."""
        self.ticks += 1
        self.now = snap.get("now", now())
        self.since = snap["until"]
        kinds = snap.get("kinds", {})
        for stage, cols in snap["series"].items():
            self._series(stage, kinds.get(stage) or self._kind(stage), cols)
        for key, cols in snap.get("freshness", {}).items():
            model, _, to = key.partition(":")
            t = cols["time"]
            if to == "publish":
                self._line(Line("freshness", model, f"{model} → publish p50", "dot")).extend(
                    t, cols["p50_ms"])
            else:
                self._line(Line("freshness", model, f"{model} p50")).extend(t, cols["p50_ms"])
                self._line(Line("freshness", model, f"{model} p99", "dash")).extend(
                    t, cols["p99_ms"])
        for name, rate in snap.get("rates", {}).items():
            if name in self.stages:
                self.stages[name].rate = float(rate)
        for name, totals in snap.get("totals", {}).items():
            if name in self.stages:
                self.stages[name].errors = int(totals.get("errors", 0))
        for event in snap.get("events", []):
            self._event(event)
        self._trim()

    def _kind(self, stage: str) -> str:
        view = self.stages.get(stage)
        return view.kind if view else ""

    def _series(self, stage: str, kind: str, cols: dict[str, np.ndarray]) -> None:
        t = cols["time"]
        view = self.stages.get(stage)
        if "rate_in" in cols:
            self._line(Line("throughput", stage, stage)).extend(t, cols["rate_in"])
        chart = "serving" if kind == "serve" else "latency"
        if "p50_ms" in cols and np.isfinite(cols["p50_ms"]).any():
            self._line(Line(chart, stage, f"{stage} p50")).extend(t, cols["p50_ms"])
            p99 = self._line(Line(chart, stage, f"{stage} p99", "dash"))
            p99.extend(t, cols["p99_ms"])
            if view is not None:
                view.p99_ms = p99.last()
        metric = next((m for m in RECENT_METRICS if m in cols), None)
        if kind == "train" and metric is not None:
            win = self._line(Line("accuracy", stage, f"{stage} {metric.removesuffix('_recent')}"))
            win.extend(t, cols[metric])
            if view is not None:
                view.metric, view.metric_value = metric.removesuffix("_recent"), win.last()
        if kind == "serve" and view is not None and "version" in cols:
            served = cols["version"][np.isfinite(cols["version"])]
            if served.size:
                view.version = int(served[-1])

    def ingest_drift(self, stage: str, frame: Any) -> None:
        """Drift rows of a train stage (``fk.drift(name)``): one line per feature's score."""
        if frame is None or len(frame) == 0 or "time" not in frame:
            return
        value = next((c for c in ("psi", "score", "value") if c in frame), None)
        if value is None:
            return
        frame = frame[frame["time"] > self.now - self.window]
        by = frame["feature"] if "feature" in frame else None
        groups = frame.groupby(by) if by is not None else [(value, frame)]
        for feature, part in groups:
            part = part[np.isfinite(part[value].to_numpy(dtype="float64"))]
            win = self._line(Line("drift", stage, f"{stage} {feature}"))
            fresh = part["time"].to_numpy(dtype="float64")
            fresh_mask = fresh > (win.t[-1] if win.t.size else -math.inf)
            if fresh_mask.any():
                win.extend(fresh[fresh_mask], part[value].to_numpy(dtype="float64")[fresh_mask])

    def _event(self, e: dict[str, Any]) -> None:
        kind, stage = str(e.get("kind", "")), str(e.get("stage", ""))
        version = e.get("version")
        label = f"v{version}" if version is not None and not _nan(version) else ""
        if kind in MARKER_KINDS:
            text = " ".join(x for x in (kind, stage, label, str(e.get("detail") or "")) if x)
            self.markers.append(Marker(float(e["time"]), kind, stage, text.strip()))
            self.markers_version[kind] += 1
        if kind in ("version", "rollback", "pin", "unpin"):
            self.new_versions.add(stage)
        if e.get("status") in QUIET_EVENTS.get(kind, ()):
            return
        detail = str(e.get("detail") or "")
        status = str(e.get("status") or "")
        words = [kind, label, status if status and kind == "version" else "", detail]
        level = "err" if kind in ("failed", "alarm") else "warn" if kind == "version" else "info"
        self.add_log(float(e["time"]), stage, " ".join(w for w in words if w), level)

    def add_log(self, time: float, stage: str, text: str, level: str = "info") -> None:
        self.log.append(LogEntry(time, stage, text, level))
        self.log_version += 1

    def _trim(self) -> None:
        oldest = self.now - self.window
        for win in self.lines.values():
            win.trim(oldest)
        while self.markers and self.markers[0].time < oldest:
            self.markers_version[self.markers.popleft().kind] += 1

    # -- reading --------------------------------------------------------------------------
    def lines_of(self, chart: str) -> list[tuple[Line, Window]]:
        return [(line, w) for line, w in self.lines.items() if line.chart == chart]

    def points(self) -> int:
        """Points held over every line (what the charts plot)."""
        return int(sum(w.t.size for w in self.lines.values()))

    def log_html(self, limit: int | None = None) -> str:
        """The log, newest first, as escaped HTML lines."""
        from datetime import datetime

        out = []
        for entry in list(reversed(self.log))[:limit]:
            clock = datetime.fromtimestamp(entry.time).strftime("%H:%M:%S")
            colour = self.colours.get(entry.stage, "inherit")
            cls = {"err": "fk-err", "warn": "fk-warn"}.get(entry.level, "")
            out.append(f"<div class='{cls}'><span class='fk-t'>{clock}</span> "
                       f"<b style='color:{colour}'>{html.escape(entry.stage)}</b> "
                       f"{html.escape(entry.text)}</div>")
        return "".join(out)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
