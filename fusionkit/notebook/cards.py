"""A card per stage: its status and figures, and the buttons that operate it.

Buttons call back into the dashboard (``act(stage, action, argument)``), which runs the
operation through the public API and reports the outcome in the log pane. A card only
sends the widget values that changed, grouped with ``hold_sync()``. A join stage's card is
its panel: what its examples are waiting for (pending), how they were decided (joined,
timed out), the outcomes it could not use (late, orphans), and how long labels take.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from fusionkit.notebook.state import JoinFigures, OnlineFigures, StageView

Act = Callable[[str, str, Any], None]
FIXED = ("train", "join", "table")  # kinds that run one actor: no scaling buttons
ORDER = {"stream": 0, "join": 1, "train": 2, "serve": 3}  # cards left to right
JOIN_ROWS = (("pending", "pending"), ("joined", "joined"), ("timed out", "timed_out"),
             ("late", "late"), ("orphans", "orphans"))
ONLINE_VERSIONS_SHOWN = 4  # newest versions with served rows scored, one card row each


def _fmt(value: float, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def join_rows(figures: JoinFigures | None) -> list[tuple[str, str]]:
    """A join card's rows: pending, then joined, timed out, late and orphans with their
    rates per second, then the label delay p50/p99 (seconds of event time).

    >>> from fusionkit.notebook.state import join_figures
    >>> a = join_figures([{"joined": 100, "timed_out": 300}], 10.0)
    >>> b = join_figures([{"joined": 150, "timed_out": 400, "pending": 7,
    ...                    "label_delay_p50": 0.52, "label_delay_p99": 1.9}], 12.0, a)
    >>> dict(join_rows(b))["joined"], dict(join_rows(b))["label delay p50 / p99"]
    ('150 · 25/s', '0.52 s / 1.90 s')
    """
    if figures is None:
        return [(label, "–") for label, _ in JOIN_ROWS] + [("label delay p50 / p99", "–")]
    out = []
    for label, key in JOIN_ROWS:
        value = _fmt(figures.counts.get(key, 0))
        if key in figures.rates:
            value += f" · {_fmt(figures.rates[key])}/s"
        out.append((label, value))
    p50, p99 = figures.label_delay_p50, figures.label_delay_p99
    delay = "–" if not math.isfinite(p50) else f"{_fmt(p50, 2, 's')} / {_fmt(p99, 2, 's')}"
    out.append(("label delay p50 / p99", delay))
    return out


def table_rows(figures: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A table's card rows: keys held, lookups, the share of them that missed, the
    lookups' p99 in its actor, and its staleness: how old an event is, at the 99th
    percentile, when the table's values hold it (a serve replica's copy adds up to half its
    ``staleness``)."""
    if not figures:
        return []
    lookups, misses = figures.get("lookups") or 0, figures.get("misses") or 0
    p99 = figures.get("lookup_p99_ms")
    return [("keys held", _fmt(figures.get("keys_held") or 0)), ("lookups", _fmt(lookups)),
            ("misses", f"{_fmt(misses)} ({misses / lookups:.0%})" if lookups else "0"),
            ("lookup p99", _fmt(p99, 2, "ms")),
            ("staleness p99", _fmt(figures.get("staleness_p99_ms"), 1, "ms"))]


def online_rows(figures: OnlineFigures | None) -> list[tuple[str, str]]:
    """A train card's rows for its model's answers as served (none without any): the
    accuracy over every served row whose outcome was learned, then, for each of the newest
    ``ONLINE_VERSIONS_SHOWN`` versions, its accuracy, log loss and rows.

    >>> from fusionkit.notebook.state import online_figures
    >>> f = online_figures({"learner": [("ctr", 1, 10, 9, 10, 2.0), ("ctr", 2, 30, 15, 0, 0.0)]})
    >>> online_rows(f["ctr"])
    [('as served', '0.600 of 40'), ('v2 as served', '0.500 · loss – · 30'), ('v1 as served', '0.900 · loss 0.200 · 10')]
    """
    if figures is None:
        return []
    out = [("as served", f"{_fmt(figures.accuracy, 3)} of {_fmt(figures.n)}")]
    for s in figures.versions[::-1][:ONLINE_VERSIONS_SHOWN]:
        out.append((f"v{s.version} as served",
                    f"{_fmt(s.accuracy, 3)} · loss {_fmt(s.log_loss, 3)} · {_fmt(s.n)}"))
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


class StageCard:
    """The widgets of one stage's card; ``box`` is what the dashboard lays out."""

    def __init__(self, name: str, kind: str, colour: str, act: Act):
        self.name, self.kind, self.act = name, kind, act
        self.head = w.HTML()
        self.stats = w.HTML(layout=w.Layout(width="100%"))
        self.stats.add_class("fk-stats")
        self.head.add_class("fk-card-head")
        button = dict(layout=w.Layout(width="auto", min_width="34px"))
        self.pause = w.Button(description="pause", tooltip=f"pause {name}", **button)
        self.resume = w.Button(description="resume", tooltip=f"resume {name}", **button)
        self.minus = w.Button(description="−", tooltip="scale down by one", **button)
        self.plus = w.Button(description="+", tooltip="scale up by one", **button)
        self.stop = w.Button(description="stop", tooltip=f"stop and remove {name}",
                             button_style="", **button)
        self.stop.add_class("fk-stop")
        self.pause.on_click(lambda _: act(name, "pause", None))
        self.resume.on_click(lambda _: act(name, "resume", None))
        self.minus.on_click(lambda _: act(name, "scale", -1))
        self.plus.on_click(lambda _: act(name, "scale", +1))
        self.stop.on_click(lambda _: act(name, "stop", None))
        buttons = w.HBox([self.pause, self.resume, self.minus, self.plus, self.stop])
        buttons.add_class("fk-buttons")
        children: list[w.Widget] = [self.head, self.stats, buttons]
        self.versions: w.Dropdown | None = None
        self._auto = None  # the version the picker shows on its own (the live one)
        if kind == "train":
            self.versions = w.Dropdown(options=[], description="", layout=w.Layout(width="150px"))
            self.rollback = w.Button(description="rollback", tooltip="make this version live",
                                     **button)
            self.pin = w.Button(description="pin", tooltip="keep this version live", **button)
            self.rollback.on_click(lambda _: self._version_action("rollback"))
            self.pin.on_click(lambda _: self._version_action("pin"))
            row = w.HBox([self.versions, self.rollback, self.pin])
            row.add_class("fk-versions")
            children.append(row)
        self.box = w.VBox(children, layout=w.Layout(border_top=f"4px solid {colour}"))
        self.box.add_class("fk-card")
        self.box.add_class(f"fk-card-{_slug(name)}")
        self._pinned = False

    def _version_action(self, action: str) -> None:
        if action == "pin" and self._pinned:
            self.act(self.name, "unpin", None)
            return
        self.act(self.name, action, self.versions.value if self.versions else None)

    # -- updating ---------------------------------------------------------------------------
    def update(self, view: StageView, colour: str) -> None:
        badge = f"<span class='fk-badge fk-{html.escape(view.status)}'>{html.escape(view.status)}</span>"
        head = (f"{badge}<span class='fk-name' style='color:{colour}'>●</span> "
                f"<span class='fk-name'>{html.escape(view.name)}</span>"
                f"<span class='fk-kind'>{html.escape(view.kind)}</span>")
        if self.head.value != head:
            self.head.value = head
        stats = self._stats(view)
        if self.stats.value != stats:
            self.stats.value = stats
        self._enable(view)

    def _stats(self, v: StageView) -> str:
        unit = "rows/s" if v.kind == "serve" else "events/s"
        rows = [("rate", _fmt(v.rate, 0, unit)), ("events", _fmt(v.events))]
        if v.kind == "stream":
            rows += [("parallelism", str(v.parallelism)), ("batch p99", _fmt(v.p99_ms, 2, "ms"))]
            if v.source:
                rows.insert(0, ("source", html.escape(v.source)))
        elif v.kind == "train":
            live = "–" if v.version is None else f"v{v.version}" + (" (pinned)" if v.pinned else "")
            rows += [("live version", live),
                     (v.metric or "accuracy", _fmt(v.metric_value, 3)), *online_rows(v.online)]
        elif v.kind == "join":
            rows += join_rows(v.join)
        elif v.kind == "table":
            rows += table_rows(v.extra.get("table"))
        else:
            rows += [("replicas", str(v.parallelism)), ("version", "–" if v.version is None
                                                        else f"v{v.version}"),
                     ("latency p99", _fmt(v.p99_ms, 2, "ms"))]
        bad = lambda n: f"<span class='fk-bad'>{n:,}</span>" if n else "0"  # noqa: E731
        rows += [("errors", bad(v.errors)), ("dead letters", bad(v.dead_letters))]
        cells = "".join(f"<tr><td>{k}</td><td class='fk-v'>{val}</td></tr>" for k, val in rows)
        error = f"<div class='fk-error'>{html.escape(v.error)}</div>" if v.error else ""
        if v.kind == "serve" and v.url:
            error += f"<div class='fk-t'><code>{html.escape(v.url)}</code></div>"
        if v.reason and not v.error:  # a waiting stream says what it waits for
            error += f"<div class='fk-reason'>{html.escape(v.reason)}</div>"
        return f"<table>{cells}</table>{error}"

    def _enable(self, v: StageView) -> None:
        want = {
            self.pause: not (v.kind != "serve" and v.status == "running"),
            self.resume: not (v.kind != "serve" and v.status in ("paused", "waiting")),
            self.minus: v.kind in FIXED or v.parallelism <= 1 or v.status == "failed",
            self.plus: v.kind in FIXED or v.status == "failed",
            self.stop: False,
        }
        for button, disabled in want.items():
            if button.disabled != disabled:
                button.disabled = disabled

    def set_versions(self, versions: list[dict[str, Any]]) -> None:
        """Fill the version picker, keeping the user's choice if it is still there."""
        if self.versions is None:
            return
        options = []
        for r in versions:
            tags = [r["status"]] + (["pinned"] if r["pinned"] else [])
            value = f" · {r['metric'][:3]} {r['value']:.3f}" if math.isfinite(r["value"]) else ""
            options.append((f"v{r['version']} {' '.join(tags)}{value}", r["version"]))
        self._pinned = any(r["pinned"] for r in versions)
        chosen = self.versions.value
        with self.versions.hold_sync():
            if [o[1] for o in options] != [o[1] for o in self.versions.options] or \
                    [o[0] for o in options] != [o[0] for o in self.versions.options]:
                self.versions.options = options
                values = [o[1] for o in options]
                live = next((r["version"] for r in versions if r["live"]), None)
                # follow the live version until the user picks another one
                if chosen is None or chosen == self._auto or chosen not in values:
                    pick = live if live in values else (values[0] if values else None)
                    self._auto = pick
                else:
                    pick = chosen
                if pick is not None:
                    self.versions.value = pick
        label = "unpin" if self._pinned else "pin"
        if self.pin.description != label:
            with self.pin.hold_sync():
                self.pin.description = label
                self.pin.tooltip = "let new versions go live" if self._pinned else \
                    "keep this version live"

    def close(self) -> None:
        close_tree(self.box)


def close_tree(widget: w.Widget) -> None:
    """Close a widget and every widget inside it (``close`` alone leaves the children)."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    widget.close()


class Cards:
    """The row of cards, rebuilt only when stages come or go."""

    def __init__(self, act: Act):
        self.act = act
        self.cards: dict[str, StageCard] = {}
        self.box = w.HBox([])
        self.box.add_class("fk-cards")

    def update(self, stages: dict[str, StageView], colour: Callable[[str], str]) -> None:
        order = sorted(stages, key=lambda n: (ORDER.get(stages[n].kind, len(ORDER)), n))
        for name in list(self.cards):
            if name not in stages or self.cards[name].kind != stages[name].kind:
                self.cards.pop(name).close()
        for name in order:
            if name not in self.cards:
                self.cards[name] = StageCard(name, stages[name].kind, colour(name), self.act)
            self.cards[name].update(stages[name], colour(name))
        boxes = tuple(self.cards[n].box for n in order)
        if tuple(self.box.children) != boxes:
            self.box.children = boxes

    def close(self) -> None:
        for card in self.cards.values():
            card.close()
        self.cards.clear()
        self.box.close()
