"""The dashboard's live charts: one plotly ``FigureWidget`` with six panels.

One figure (not six) because each ``FigureWidget`` is an anywidget that ships plotly's
whole bundle to the browser, and because one ``batch_update()`` then sends every panel's
changes in a single message. Lines are fixed windows of float64 numpy arrays (sent as
binary buffers); only the lines whose window changed are resent. Time runs in local time;
vertical markers (versions, rollbacks, pins, drift alarms, failures) are layout shapes
anchored to each panel's height, so they span the panel whatever its scale.

A panel without data says why in its middle (``empty_note``: no stage of the kind it plots,
no drift watch, no requests yet, ...), and the note goes when the first line comes. Log
axes label the 1-2-5 ticks of each decade with whole numbers ("10 20 50 100"), not
plotly's default "5 6 7 8 9 1000 2 3" that labels the minor ticks with one digit.
"""

from __future__ import annotations

import threading
from copy import deepcopy
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fusionkit.monitor.series import to_local_time
from fusionkit.notebook.state import DashboardState, Line

PANELS = {  # chart: (row, col, title, y axis title, log scale)
    "throughput": (1, 1, "Throughput per stage", "events / s", False),
    "latency": (1, 2, "Batch latency per stage: p50 solid, p99 dashed", "ms", True),
    "freshness": (2, 1, "Freshness: ingest → first answer by a model that learned it",
                  "ms", True),
    "serving": (2, 2, "Serving latency: p50 solid, p99 dashed", "ms", True),
    "accuracy": (3, 1, "Accuracy: prequential (recent), as served dotted; ticks: versions",
                 "accuracy (0–1) or MAE", False),
    "drift": (3, 2, "Drift scores per feature", "PSI", False),
}
MARKER_STYLE = {  # kind: (colour, dash, width, panels it is drawn on; None = all)
    "version": ("rgba(87,96,106,0.55)", "solid", 1, ("accuracy", "freshness", "serving")),
    "rollback": ("#e36209", "solid", 2, None),
    "pin": ("#8250df", "dash", 2, None),
    "alarm": ("#cf222e", "solid", 2, None),
    "failed": ("#24292f", "dash", 2, None),
}
COMPARE_PANELS = {  # the models of a serve stage side by side (fk.compare), over time
    "compare_accuracy": (1, 1, "Online accuracy per model, from joined outcomes (fk.compare)",
                         "accuracy", False),
    "compare_log_loss": (1, 2, "Online log loss per model: lower is better", "log loss", False),
}
HOVER_UNITS = {"throughput": "%{y:,.0f} events/s", "latency": "%{y:.2f} ms",
               "freshness": "%{y:,.0f} ms", "serving": "%{y:.2f} ms",
               "accuracy": "%{y:.3f}", "drift": "PSI %{y:.3f}",
               "compare_accuracy": "%{y:.3f}", "compare_log_loss": "%{y:.3f}"}
VERSION_TICK = 0.08  # height of a version's tick, as a fraction of the panel
MAX_VERSION_TICKS = 60
NO_DRIFT = "drift monitoring is not available in this fusionkit (no fk.drift)"
LOG_AXIS = dict(dtick="D2", tickformat="~g")  # ticks at 1, 2, 5 of each decade, in full
NOTE_STYLE = dict(showarrow=False, font=dict(size=11, color="#656d76"), x=0.5, y=0.5,
                  xanchor="center", yanchor="middle")


def empty_note(state: DashboardState | None, chart: str, drift_available: bool = True) -> str:
    """Why ``chart`` shows no line, in a few words ("" once it has data).

    >>> empty_note(DashboardState(), "drift")
    'no train stage to watch for drift yet'
    >>> empty_note(None, "serving")
    'no serve stage: fk.serve(...) or %fusion serve'
    """
    if chart == "drift" and not drift_available:
        return NO_DRIFT
    if state is not None and any(w.t.size for _, w in state.lines_of(chart)):
        return ""
    stages = state.stages if state is not None else {}
    kinds = {view.kind for view in stages.values()}
    trains = [name for name, view in stages.items() if view.kind == "train"]
    if chart in ("throughput", "latency"):
        if not stages:
            return "no stage yet: fk.stream(...) or %%fusion stream"
        return "waiting for the first batches"
    if chart == "freshness":
        if not trains:
            return "no train stage: freshness is measured once a model learns events"
        return "waiting for a version that learned events to answer"
    if chart == "serving":
        serves = [view for view in stages.values() if view.kind == "serve"]
        if not serves:
            return "no serve stage: fk.serve(...) or %fusion serve"
        if not any(view.events for view in serves):
            return (f"no requests yet: fk.predict({serves[0].name!r}, rows) or HTTP POST "
                    f"to {serves[0].url or 'its route'}")
        return ("few requests so far: a replica reports its latency at most every 0.5 s, "
                "with a request that comes after that")
    if chart == "accuracy":
        if "train" not in kinds:
            return "no train stage: fk.train(...) or %%fusion train"
        return "waiting for the first labelled events"
    if chart == "drift":
        if not trains:
            return "no train stage to watch for drift yet"
        if not state.watching & set(trains):
            return (f"no drift watch running: start one with fk.watch_drift({trains[0]!r}) "
                    f"(fusionkit.watch_drift)")
        return "watching: scores come with the first full window of events"
    return ""


class _FigureWidget(go.FigureWidget):
    """A ``FigureWidget`` whose date axes stay date axes when their data is replaced.

    plotly.js resets the type of the axes of the first N traces whenever N traces get new
    x or y data in one update, unless that update sets the type itself (``clearAxisTypes``
    indexes the figure's traces, not the updated ones). An axis reset that way types
    itself from numbers and becomes linear, so every update that changes data restates
    the x axes' type.
    """

    def _send_update_msg(self, restyle_data, relayout_data, trace_indexes=None,
                         source_view_id=None):
        if restyle_data and ("x" in restyle_data or "y" in restyle_data):
            if getattr(self, "_date_axes", None) is None:
                self._date_axes = [a for a in self.layout
                                   if a.startswith("xaxis") and self.layout[a].type == "date"]
            relayout_data = dict(relayout_data or {})
            for axis in self._date_axes:
                relayout_data.setdefault(f"{axis}.type", "date")
        super()._send_update_msg(restyle_data, relayout_data, trace_indexes, source_view_id)


def local_offset_ms(seconds: float) -> float:
    """Milliseconds to add to epoch milliseconds so a plotly date axis shows local time."""
    stamp = to_local_time(pd.Series([seconds])).iloc[0]
    return stamp.utcoffset().total_seconds() * 1000.0


class Charts:
    """The six panels; ``render(state)`` brings them up to date with a ``DashboardState``.
    It draws the lines of its ``panels`` only, so another set of panels is a subclass
    (``CompareCharts``)."""

    panels = PANELS

    def __init__(self, height: int = 760, drift_available: bool = True):
        fig = make_subplots(rows=max(p[0] for p in self.panels.values()),
                            cols=max(p[1] for p in self.panels.values()),
                            subplot_titles=[p[2] for p in self.panels.values()],
                            vertical_spacing=0.1, horizontal_spacing=0.08)
        fig.update_layout(template="plotly_white", height=height, autosize=True,
                          margin=dict(l=60, r=24, t=40, b=36), hovermode="x unified",
                          legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0,
                                      font=dict(size=11)),
                          font=dict(size=11), uirevision="fusionkit")
        fig.update_annotations(font_size=12)
        self._refs: dict[str, tuple[str, str]] = {}
        for chart, (row, col, _, ytitle, log) in self.panels.items():
            fig.update_yaxes(title_text=ytitle, type="log" if log else "linear",
                             title_font_size=11, row=row, col=col, **(LOG_AXIS if log else {}))
            fig.update_xaxes(type="date", tickformat="%H:%M:%S", title_text="local time",
                             title_font_size=10, title_standoff=2, row=row, col=col)
            panel = fig.get_subplot(row, col)
            self._refs[chart] = (panel.xaxis.plotly_name.replace("axis", ""),
                                 panel.yaxis.plotly_name.replace("axis", ""))
            # an empty line per panel, so every panel draws its axes before data comes
            fig.add_trace(go.Scatter(x=np.empty(0), y=np.empty(0), showlegend=False,
                                     hoverinfo="skip", name=""), row=row, col=col)
        # one time range for every panel: they scroll together, and zoom together
        fig.update_xaxes(matches="x")
        fig.layout.xaxis.matches = None
        # a note in the middle of each panel, saying why it is empty while it is
        self.drift_available = drift_available
        self._notes: dict[str, str] = {}
        self._note_index: dict[str, int] = {}
        for chart, (xref, yref) in self._refs.items():
            note = self._empty_note(None, chart)
            self._note_index[chart] = len(fig.layout.annotations)
            self._notes[chart] = note
            fig.add_annotation(text=note, visible=bool(note), name=f"empty-{chart}",
                               xref=f"{xref} domain", yref=f"{yref} domain", **NOTE_STYLE)
        self.figure = _FigureWidget(fig)
        self.figure.add_class("fk-charts")
        self._traces: dict[Line, Any] = {}
        self._seen: dict[Line, int] = {}
        self._markers_seen: dict[str, int] = {}
        self._legend: set[str] = set()
        self.renders = 0
        self.ready = threading.Event()  # set once a browser view has drawn the figure
        self.figure.observe(self._on_view, names=["_js2py_traceDeltas"])

    def _empty_note(self, state: DashboardState | None, chart: str) -> str:
        return empty_note(state, chart, self.drift_available)

    def _on_view(self, change: dict[str, Any]) -> None:
        """A view drew the figure (plotly's view reports its trace defaults after drawing).

        Until then nothing is sent: messages that reach the browser before plotly's module
        has loaded there are dropped, and the view would start from a figure that the
        kernel has already moved past.
        """
        if change.get("new") is not None and not self.ready.is_set():
            self._seen.clear()
            self._markers_seen.clear()
            self.ready.set()

    def view_ready(self) -> None:
        """Start sending updates without waiting for a browser view (scripts and tests)."""
        self.ready.set()

    # -- traces -----------------------------------------------------------------------------
    def _add_line(self, line: Line, colour: str) -> Any:
        row, col = self.panels[line.chart][:2]
        first = line.stage not in self._legend and not line.legend
        if not line.legend:
            self._legend.add(line.stage)
        trace = go.Scatter(x=np.empty(0), y=np.empty(0), mode="lines", name=line.label,
                           legendgroup=line.stage, showlegend=first or line.legend,
                           legendgrouptitle=None,
                           line=dict(color=colour, dash=line.dash,
                                     width=1.4 if line.dash != "solid" else 2),
                           hovertemplate=f"{line.label}: {HOVER_UNITS[line.chart]}<extra></extra>")
        if first:
            trace.name = line.stage
        self.figure.add_trace(trace, row=row, col=col)
        return self.figure.data[-1]

    # -- rendering --------------------------------------------------------------------------
    def render(self, state: DashboardState) -> bool:
        """Resend the lines and markers that changed; return whether anything was sent."""
        if not self.ready.is_set():
            return False
        new = [line for line in state.lines
               if line.chart in self.panels and line not in self._traces]
        for line in new:
            self._traces[line] = self._add_line(line, state.colour(line.stage))
        if new:
            self._resync()
        changed = [(line, w) for line, w in state.lines.items()
                   if line.chart in self.panels and self._seen.get(line) != w.version]
        kinds = [k for k, v in state.markers_version.items() if self._markers_seen.get(k) != v]
        notes = {chart: self._empty_note(state, chart) for chart in self.panels}
        notes = {chart: note for chart, note in notes.items() if note != self._notes[chart]}
        if not changed and not kinds and not notes:
            return False
        offset = local_offset_ms(state.now)
        with self.figure.batch_update():
            for chart, note in notes.items():
                annotation = self.figure.layout.annotations[self._note_index[chart]]
                annotation.text, annotation.visible = note, bool(note)
                self._notes[chart] = note
            for line, win in changed:
                trace = self._traces[line]
                trace.x = win.t * 1000.0 + offset
                trace.y = win.y
                self._seen[line] = win.version
            if kinds:
                self.figure.layout.shapes = self._marker_shapes(state, offset)
                self._markers_seen.update(state.markers_version)
        self.renders += 1
        return True

    def _resync(self) -> None:
        """Give the widget model the whole figure again.

        A view renders from the model's copy of the figure, which the browser keeps up to
        date from incremental messages; messages that arrive before plotly's module has
        loaded there are lost. Assigning the whole figure after each structural change
        means a view drawn later (or after a page reload) starts from the right traces.
        """
        self.figure._widget_layout = deepcopy(self.figure._layout_obj._props)
        self.figure._widget_data = deepcopy(self.figure._data)

    def _marker_shapes(self, state: DashboardState, offset: float) -> list[dict[str, Any]]:
        """Vertical lines: full height for rollbacks, pins, alarms and failures; a short tick
        at the foot of the model panels for each of the last ``MAX_VERSION_TICKS`` versions."""
        shapes = []
        versions = [m for m in state.markers if m.kind == "version"][-MAX_VERSION_TICKS:]
        others = [m for m in state.markers if m.kind != "version"]
        for m in versions + others:
            colour, dash, width, panels = MARKER_STYLE[m.kind]
            x = m.time * 1000.0 + offset
            top = VERSION_TICK if m.kind == "version" else 1.0
            for chart in panels or self.panels:
                if chart not in self._refs:  # a panel of another figure
                    continue
                xref, yref = self._refs[chart]
                shape = dict(type="line", xref=xref, yref=f"{yref} domain", x0=x, x1=x, y0=0,
                             y1=top, line=dict(color=colour, dash=dash, width=width), layer="above")
                if m.kind != "version" and chart in ("throughput", "accuracy"):
                    shape["label"] = dict(text=m.label, textposition="end", font=dict(size=9),
                                          textangle=0, xanchor="left", yanchor="top", padding=4)
                shapes.append(shape)
        return shapes

    def note(self, chart: str) -> str:
        """The note ``chart`` shows ("" when it shows data)."""
        annotation = self.figure.layout.annotations[self._note_index[chart]]
        return annotation.text if annotation.visible else ""

    def points(self) -> int:
        """Data points the figure holds in its lines (not counting markers)."""
        return int(sum(len(t.x) for t in self._traces.values() if t.x is not None))


class CompareCharts(Charts):
    """The models of serve stages side by side: online accuracy and log loss per model over
    time, each model in its train stage's colour (``DashboardState._ingest_compare``). Built
    only once a serve stage with canaries or shadows has scored rows: a second figure costs
    the browser plotly's bundle once more, which a dashboard without them never pays."""

    panels = COMPARE_PANELS

    def __init__(self, height: int = 300):
        super().__init__(height=height)

    def _empty_note(self, state: DashboardState | None, chart: str) -> str:
        if state is not None and any(w.t.size for _, w in state.lines_of(chart)):
            return ""
        if chart == "compare_log_loss":
            return "no log loss: the models answer without probabilities"
        return "waiting for outcomes joined to the models' answers"
