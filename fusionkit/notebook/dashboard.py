"""The live dashboard: ``fk.dashboard()`` or ``%fusion dashboard``.

It shows the pipeline (source → stream → join → train → serve, with status and live rates),
a card per stage with its controls (a join's card has its pending, joined, timed out, late
and orphan counts with their rates, and the label delay p50/p99; a trainer's card has, next to
its prequential accuracy, the accuracy and log loss per version of its model's answers as
served, once a served log joined with outcomes is learned), live charts (and, for a serve
stage with canaries or shadows, its models side by side: ``fk.compare``'s figures over time)
and a capped log of pipeline events and dead letters, and keeps them current from a
background thread
while the notebook goes on: the cell that shows it returns at once. It only reads from the
controller and the monitor, so it works as well for a pipeline that another notebook or
process started.

Updates are cheap for the kernel: one monitor call per tick (everything new since the last
one) and a status call once a second (then one per join stage, for its counts; the served
rows a train stage scored, and its comparison of a serve stage's models, come in its status
row, with no call of their own); lines are fixed windows of numpy arrays sent in one
``batch_update()``; widgets send only what changed. Updates stop when the dashboard is closed, and pause while no view of it is on
screen (a browser view reports itself every two seconds). A static viewer, or a notebook
saved without widget state, shows an HTML snapshot instead.

In a notebook (not a doctest: it starts a local Ray and shows widgets)::

    import fusionkit as fk
    fk.connect()
    fk.dashboard()
"""

from __future__ import annotations

import html
import logging
import math
import threading
import time
from typing import Any

import ipywidgets as w

from fusionkit._clock import monotonic, now
from fusionkit._duration import parse_duration
from fusionkit.errors import NotConnectedError
from fusionkit.notebook.cards import Cards, close_tree
from fusionkit.notebook.charts import Charts
from fusionkit.notebook.compare_view import CompareSection
from fusionkit.notebook.feed import Feed
from fusionkit.notebook.pipeline_view import PipelineView
from fusionkit.notebook.state import DashboardState

log = logging.getLogger("fusionkit")

DEFAULT_INTERVAL = 1 / 3  # seconds between updates: 3 Hz
IDLE_AFTER = 8.0          # seconds without a heartbeat from any view before updates pause
VERSIONS_EVERY = 2.0      # seconds between version-list refreshes of a train stage
DRIFT_EVERY = 2.0
DEAD_LETTERS_SHOWN = 3


class Dashboard:
    """A live view of the pipeline and its controls; display it to see it.

    ``interval`` is the time between updates (seconds or a duration such as ``"250ms"``;
    default a third of a second), ``window`` the span of history the charts show.
    """

    def __init__(self, interval: float | str = DEFAULT_INTERVAL, window: float | str = "2min",
                 height: int = 760, idle_after: float = IDLE_AFTER, start: bool = True):
        self.interval = parse_duration(interval)
        if not 0.05 <= self.interval <= 60:
            raise ValueError(f"interval must be between 50ms and 60s, got {interval!r}")
        self.window = parse_duration(window)
        if self.window < 5:
            raise ValueError(f"window must be at least 5 seconds, got {window!r}")
        self.idle_after = float(idle_after)
        self.feed = Feed()
        self.address = _address()
        self.state = DashboardState(window=self.window)
        self.charts = Charts(height=height, drift_available=self.feed.drift_available())
        self.cards = Cards(self._act)
        self.compare = CompareSection()
        self.view = PipelineView(on_heartbeat=self._heartbeat)
        self.header = w.HTML()
        self.close_button = w.Button(description="close", tooltip="stop updating and close",
                                     layout=w.Layout(width="auto", margin="0 0 0 auto"))
        self.close_button.on_click(lambda _: self.close())
        self.logs = w.HTML()
        self.logs.add_class("fk-log")
        log_title = w.HTML("<span class='fk-log-title'>Events, dead letters and actions</span>")
        top = w.HBox([self.header, self.close_button], layout=w.Layout(align_items="center"))
        self.widget = w.VBox([top, self.view, self.cards.box, self.charts.figure,
                              self.compare.box, log_title, self.logs])
        self.widget.add_class("fk-dashboard")
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._force_status = True
        self._last_beat: float | None = None  # None: no view has reported yet
        self._versions_at: dict[str, float] = {}
        self._drift_at = -math.inf
        self._dead_seen: dict[str, int] = {}
        self.error: str | None = None
        self.updates = 0
        self.loops = 0
        self.update_seconds = 0.0  # thread CPU time spent in updates
        self._thread: threading.Thread | None = None
        self._render_header()
        if start:
            self.start()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background updates (done at construction unless ``start=False``)."""
        if self._thread is None and not self._closed.is_set():
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="fusionkit-dashboard")
            self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def running(self) -> bool:
        """Whether the updater thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def active(self) -> bool:
        """Whether updates are flowing: open, and a view was seen lately (or none yet)."""
        if self.closed:
            return False
        return self._last_beat is None or monotonic() - self._last_beat < self.idle_after

    def close(self, timeout: float = 10.0) -> None:
        """Stop updating and close every widget of the dashboard."""
        self._closed.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self.cards.close()
            self.compare.close()
            close_tree(self.widget)
            self.view.close()
            self.charts.figure.close()
        global _current
        if _current is self:
            _current = None

    def _heartbeat(self, kind: str) -> None:
        if kind == "alive":
            was_idle = not self.active
            self._last_beat = monotonic()
            if was_idle:
                self._wake.set()
        else:
            self._last_beat = -math.inf

    def _run(self) -> None:
        while not self._closed.is_set():
            self.loops += 1
            if not self.active:
                self._render_header()  # says the updates are paused
            else:
                t0 = time.thread_time()
                try:
                    self.update()
                    self.error = None
                except NotConnectedError as exc:
                    self.error = str(exc)
                    self._render_header()
                    break
                except Exception as exc:  # the pipeline may be restarting: keep trying
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.debug("dashboard update failed", exc_info=True)
                    self._render_header()
                    self._wake.wait(1.0)
                self.update_seconds += time.thread_time() - t0
            self._wake.wait(self.interval if self.active else 1.0)
            self._wake.clear()

    # -- one tick ---------------------------------------------------------------------------
    def update(self) -> None:
        """Fetch what is new and redraw what changed (the updater calls this each tick)."""
        with self._lock:
            if self.closed:
                return
            since = self.state.since
            if since is not None:
                since = max(since, now() - self.window)
            else:
                since = now() - self.window
            force, self._force_status = self._force_status, False
            snap, status = self.feed.fetch(since, force_status=force)
            if status is not None:
                self.state.ingest_status(status)
                self._joins()
                self._dead_letters()
            self.state.ingest_snapshot(snap)
            self._side_calls()
            self._render()
            self.updates += 1

    def _side_calls(self) -> None:
        """Version lists, sources and drift: asked for only when due."""
        t = monotonic()
        for name, view in self.state.stages.items():
            if view.kind == "stream" and view.source is None:
                view.source = self.feed.source_label(name)
            if view.kind != "train":
                continue
            due = name in self.state.new_versions or name not in self._versions_at
            if due and t - self._versions_at.get(name, -math.inf) >= VERSIONS_EVERY:
                self._versions_at[name] = t
                self.state.new_versions.discard(name)
                try:
                    versions = self.feed.versions(name)
                except Exception as exc:  # no version published yet
                    log.debug("versions of %s: %s", name, exc)
                    versions = []
                live = next((r for r in versions if r["live"]), None)
                view.version = live["version"] if live else None
                view.pinned = any(r["pinned"] for r in versions)
                card = self.cards.cards.get(name)
                if card is not None:
                    card.set_versions(versions)
                else:
                    view.extra["versions"] = versions
        if self.charts_drift and t - self._drift_at >= DRIFT_EVERY:
            self._drift_at = t
            for name, view in self.state.stages.items():
                if view.kind == "train":
                    try:
                        self.state.ingest_drift(name, self.feed.drift(name))
                        if self.feed.watching(name):  # the empty chart says so if not
                            self.state.watching.add(name)
                        else:
                            self.state.watching.discard(name)
                    except Exception as exc:
                        log.debug("drift of %s: %s", name, exc)

    def _joins(self) -> None:
        """Each join stage's counts, rates and label delays: asked for with the status."""
        for name, view in self.state.stages.items():
            if view.kind == "join":
                try:
                    self.state.ingest_join(name, self.feed.join_reports(name))
                except Exception as exc:  # stopped meanwhile: the next status drops it
                    log.debug("join counts of %s: %s", name, exc)

    @property
    def charts_drift(self) -> bool:
        return self.feed.drift_available()

    def _dead_letters(self) -> None:
        for name, view in self.state.stages.items():
            before = self._dead_seen.get(name, 0)
            if view.dead_letters > before:
                self._dead_seen[name] = view.dead_letters
                try:
                    items = self.feed.dead_letters(name, DEAD_LETTERS_SHOWN)
                except Exception as exc:
                    log.debug("dead letters of %s: %s", name, exc)
                    continue
                new = view.dead_letters - before
                for item in items[-min(new, DEAD_LETTERS_SHOWN):]:
                    self.state.add_log(item["time"], name,
                                       f"dead letter at offset {item['offset']}: {item['reason']}",
                                       "warn")
                if new > DEAD_LETTERS_SHOWN:
                    self.state.add_log(now(), name, f"… {new:,} new dead letters in all "
                                       f"(fk.dead_letters({name!r}) lists them)", "warn")

    def _render(self) -> None:
        state = self.state
        self.cards.update(state.stages, state.colour)
        for name, card in self.cards.cards.items():
            pending = state.stages[name].extra.pop("versions", None)
            if pending is not None:
                card.set_versions(pending)
        stages = [{"name": v.name, "kind": v.kind, "status": v.status, "rate": round(v.rate, 1),
                   "events": v.events, "parallelism": v.parallelism, "on": v.on,
                   "color": state.colour(v.name), "source": v.source, "version": v.version,
                   "error": v.error} for v in state.stages.values()]
        if stages != self.view.stages:
            self.view.stages = stages
        self.charts.render(state)
        self.compare.update(state)
        if state.log_version != getattr(self, "_log_seen", -1):
            self._log_seen = state.log_version
            self.logs.value = state.log_html() or "<span class='fk-t'>nothing yet</span>"
        self._render_header()

    def _render_header(self) -> None:
        if self.closed:
            mode = "<span class='fk-idle'>closed</span>"
        elif self.error:
            mode = f"<span class='fk-idle'>{html.escape(self.error)[:160]}</span>"
        elif not self.active:
            mode = "<span class='fk-idle'>paused: no view on screen</span>"
        else:
            mode = f"<span class='fk-live'>● live</span> {1 / self.interval:.1f} Hz"
        clock = time.strftime("%H:%M:%S", time.localtime(self.state.now))
        value = (f"<div class='fk-header'><b class='fk-title'>fusionkit</b>"
                 f"<span>{len(self.state.stages)} stages · Ray at "
                 f"<code>{html.escape(self.address)}</code> · updated {clock}</span>"
                 f"<span>{mode}</span></div>")
        if self.header.value != value:
            self.header.value = value

    # -- controls ---------------------------------------------------------------------------
    def _act(self, stage: str, action: str, arg: Any) -> None:
        """Run a card's button through the public API; report the outcome in the log."""
        import fusionkit as fk

        try:
            if action == "scale":
                view = self.state.stages[stage]
                target = view.parallelism + int(arg)
                fk.scale(stage, target)
                result = f"scaled to {target}"
            elif action in ("pause", "resume"):
                result = getattr(fk, action)(stage)
            elif action == "stop":
                fk.stop(stage)
                result = "stopped"
            elif action in ("rollback", "pin"):
                if arg is None:
                    raise ValueError("choose a version first")
                getattr(fk, action)(stage, int(arg))
                result = f"{action} to v{arg}" if action == "rollback" else f"pinned v{arg}"
                self._versions_at.pop(stage, None)
            elif action == "unpin":
                fk.unpin(stage)
                result = "unpinned"
                self._versions_at.pop(stage, None)
            else:
                raise ValueError(f"unknown action {action!r}")
            self.state.add_log(now(), stage, f"{action}: {result}")
        except Exception as exc:
            self.state.add_log(now(), stage, f"{action} failed: {type(exc).__name__}: {exc}",
                               "err")
        self._force_status = True
        self._wake.set()
        if not self.running:  # no updater (closed or never started): show the log at least
            self.logs.value = self.state.log_html()

    # -- display ----------------------------------------------------------------------------
    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self.updates == 0 and not self.closed:  # shown before the updater's first tick:
            try:  # fetch once, so the snapshot a saved notebook keeps is not "no stages yet"
                self.update()
            except Exception as exc:
                log.debug("dashboard first update: %s", exc)
        bundle = self.widget._repr_mimebundle_() or {}
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        bundle = dict(bundle)
        bundle["text/html"] = self.snapshot_html()
        bundle["text/plain"] = repr(self)
        return bundle

    def __repr__(self) -> str:
        state = "closed" if self.closed else "live" if self.active else "paused"
        return f"<fusionkit dashboard: {len(self.state.stages)} stages, {state}>"

    def snapshot_html(self) -> str:
        """A static HTML table of the stages as last seen, for viewers without widgets."""
        from fusionkit.notebook.static import snapshot_html

        return snapshot_html(self.state, self.address)


def _address() -> str:
    from fusionkit.connect import connection

    return connection().address


_current: Dashboard | None = None
_options: dict[str, Any] = {}
_lock = threading.Lock()


def stop_updates(timeout: float = 10.0) -> None:
    """Close the dashboard of this kernel, if any, its updater thread ended on return (up to
    ``timeout`` seconds). ``fk.shutdown()`` calls it before Ray goes down: the updater's next
    call on a handle would otherwise make Ray start a new local instance in its thread."""
    with _lock:
        current = _current
    if current is not None:
        current.close(timeout)


def show(**options: Any) -> Dashboard:
    """The dashboard of this kernel, built on first use; display it to see it.

    Returns the same open dashboard again (so showing it twice does not double the work)
    unless ``options`` differ or the kernel is now connected elsewhere, in which case the old
    one is closed and a new one built. Options are those of :class:`Dashboard`.
    """
    global _current, _options
    with _lock:
        if (_current is not None and not _current.closed and options == _options
                and _current.address == _address()):
            return _current
        if _current is not None:
            _current.close()
        _current = Dashboard(**options)
        _options = dict(options)
        return _current
