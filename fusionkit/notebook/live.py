"""Live status views: what a ``%fusion`` magic's result shows in a notebook.

A view is an HTML table of some stages (or all of them). Displayed, it is an ipywidgets
``HTML`` widget kept current by one background thread per kernel, with a ``text/html`` copy
of the table as the fallback that nbval, GitHub and nbviewer show. The widget is built on
first display and cached. Updates stop when the view is closed, when its stage is stopped,
when a newer view of the same stages is displayed (a re-run cell), and for the oldest views
once more than ``max_live`` are live, so a long notebook does not keep polling what nobody
sees. Widget traits are set from the thread; nothing is printed from it.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

from fusionkit._rpc import get
from fusionkit.errors import NotConnectedError

STATUS_COLOURS = {"running": "#1a7f37", "paused": "#9a6700", "waiting": "#9a6700",
                  "starting": "#0969da", "failed": "#cf222e", "stopped": "#6e7781", "finished": "#6e7781"}
COLUMNS = ("stage", "kind", "status", "actors", "events", "rate", "dead letters", "input",
           "version", "detail")


# -- one snapshot of the pipeline --------------------------------------------------------------

_handles: tuple[Any, dict[str, Any]] | None = None


def _monitor_registry() -> dict[str, Any]:
    global _handles
    from fusionkit.api import handles
    from fusionkit.connect import connection

    conn = connection()
    if _handles is None or _handles[0] is not conn:
        _handles = (conn, handles())
    return _handles[1]


def _get(ref: Any, timeout: float) -> Any:
    return get(ref, timeout)


def snapshot(names: tuple[str, ...] | None = None,
             timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    """Status rows with each stage's live rate and, for train and serve, live version.

    ``names``: only these stages (asking only their actors; unknown names are left out);
    ``None``: every stage.
    """
    from fusionkit.stages import rows as status_rows

    hs = _monitor_registry()
    rates_ref = hs["monitor"].recent_rates.remote()
    rows = status_rows(names, timeout)
    models = sorted({r["name"] for r in rows if r["kind"] == "train"}
                    | {r["on"] for r in rows if r["kind"] == "serve" and r.get("on")})
    live_refs = [hs["registry"].live.remote(m) for m in models]
    rates = ray.get(rates_ref, timeout=timeout)
    live = dict(zip(models, [v for v, _ in ray.get(live_refs, timeout=timeout)], strict=True))
    out = {}
    for row in rows:
        row = dict(row)
        row["rate"] = float(rates.get(row["name"], 0.0))
        model = row["name"] if row["kind"] == "train" else row.get("on")
        row["version"] = live.get(model) if row["kind"] in ("train", "serve") else None
        out[row["name"]] = row
    return out


# -- rendering --------------------------------------------------------------------------------

def _detail(row: dict[str, Any]) -> str:
    if row.get("error"):
        first = str(row["error"]).strip().splitlines()[0] if str(row["error"]).strip() else ""
        return f"<span style='color:{STATUS_COLOURS['failed']}'>{html.escape(first[:160])}</span>"
    if row.get("url"):
        url = html.escape(str(row["url"]))
        return f"<code>{url}</code>"
    if row.get("reason"):  # why a waiting or paused stage reads nothing
        return f"<span style='color:#6e7781'>{html.escape(str(row['reason']))}</span>"
    return ""


def row_html(row: dict[str, Any]) -> str:
    status = str(row.get("status", ""))
    colour = STATUS_COLOURS.get(status, "#6e7781")
    version = f"v{row['version']}" if row.get("version") is not None else ""
    cells = [f"<b>{html.escape(row['name'])}</b>", html.escape(str(row.get("kind", ""))),
             f"<span style='color:{colour};font-weight:600'>{html.escape(status)}</span>",
             str(row.get("parallelism", "")), f"{int(row.get('events', 0) or 0):,}",
             f"{float(row.get('rate', 0) or 0):,.0f}/s", f"{int(row.get('dead_letters', 0) or 0):,}",
             html.escape(str(row.get("on") or "")), version, _detail(row)]
    align = ("left", "left", "left", "right", "right", "right", "right", "left", "left", "left")
    return "<tr>" + "".join(f"<td style='text-align:{a}'>{c}</td>"
                            for a, c in zip(align, cells, strict=True)) + "</tr>"


def table_html(rows: list[dict[str, Any]], title: str, note: str = "") -> str:
    """The status table: a title line, then one row per stage."""
    head = "".join(f"<th style='text-align:left'>{c}</th>" for c in COLUMNS)
    body = "".join(row_html(r) for r in rows) or (
        f"<tr><td colspan='{len(COLUMNS)}'>no stages</td></tr>")
    clock = time.strftime("%H:%M:%S")
    note = f" · {html.escape(note)}" if note else ""
    return (f"<div class='fusionkit-status'><b>fusionkit</b> {html.escape(title)} "
            f"<small>at {clock}{note}</small><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>")


# -- the view -------------------------------------------------------------------------------

class LiveView:
    """A status table of the stages ``names`` (``None``: every stage) that keeps current."""

    def __init__(self, names: tuple[str, ...] | None, title: str):
        self.names = names
        self.title = title
        self.widget: Any = None
        self.frozen: str | None = None  # why it stopped updating
        self.seen: dict[str, dict[str, Any]] = {}

    def rows(self, snap: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        if self.names is None:
            return list(snap.values())
        out = []
        for name in self.names:
            row = snap.get(name)
            if row is None:  # gone from the pipeline: show it as stopped
                last = self.seen.get(name, {"name": name, "kind": ""})
                row = {**last, "status": "stopped", "rate": 0.0, "error": None}
            out.append(row)
        return out

    def html(self, snap: dict[str, dict[str, Any]] | None = None, note: str = "") -> str:
        if snap is None:
            try:
                snap = snapshot(self.names)
            except Exception as exc:  # a static copy must not fail the cell that shows it
                return table_html([], self.title, f"status unavailable: {exc}")
        return table_html(self.rows(snap), self.title, note)

    def refresh(self, snap: dict[str, dict[str, Any]] | None, error: str | None) -> None:
        """Called by the poller thread: redraw, and stop once the stages are all gone."""
        if snap is None:
            note = f"not updating: {error}"
            self.widget.value = table_html(self.rows(self.seen), self.title, note)
            return
        if self.names is None:
            self.seen = dict(snap)
        else:
            self.seen.update({n: snap[n] for n in self.names if n in snap})
            if not any(n in snap for n in self.names):
                self.freeze("stopped", snap)
                return
        self.widget.value = self.html(snap, f"live, {_poller.rate:g} Hz")

    def freeze(self, reason: str, snap: dict[str, dict[str, Any]] | None = None) -> None:
        """Stop updating; the table keeps its last values with the reason."""
        if self.frozen is None:
            self.frozen = reason
            _poller.discard(self)
            if self.widget is not None and self.widget.comm is not None:
                rows = self.rows(self.seen if snap is None else snap)
                self.widget.value = table_html(rows, self.title, f"not updating: {reason}")

    @property
    def closed(self) -> bool:
        return self.widget is not None and self.widget.comm is None

    def close(self) -> None:
        """Stop updating and close the widget."""
        self.freeze("closed")
        if self.widget is not None:
            self.widget.close()

    def mimebundle(self, plain: str | Callable[[dict[str, dict[str, Any]] | None], str]
                   ) -> dict[str, Any]:
        """The widget view, its ``text/html`` fallback and ``text/plain`` (a string, or made
        from the same snapshot as the table)."""
        import ipywidgets as w

        try:
            snap: dict[str, dict[str, Any]] | None = snapshot(self.names)
            first = self.html(snap)
        except Exception as exc:  # a static copy must not fail the cell that shows it
            snap, first = None, table_html([], self.title, f"status unavailable: {exc}")
        text = plain(snap) if callable(plain) else plain
        bundle: dict[str, Any] = {"text/plain": text, "text/html": first}
        if self.frozen is not None:  # a closed or stopped view shows its table only
            return bundle
        if self.widget is None:
            self.widget = w.HTML(value=first)
            self.widget.add_class("fusionkit-live")
            _poller.add(self)
        view = self.widget._repr_mimebundle_() or {}
        if isinstance(view, tuple):
            view = view[0]
        key = "application/vnd.jupyter.widget-view+json"
        if key in view:
            bundle[key] = view[key]
        return bundle


# -- one updater thread per kernel -------------------------------------------------------------

class _Poller:
    def __init__(self) -> None:
        self.views: list[LiveView] = []
        self.rate = 2.0          # Hz; %config FusionMagics.refresh_rate sets it
        self.max_live = 8
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0

    def add(self, view: LiveView) -> None:
        with self._lock:
            older = [v for v in self.views if v.names == view.names]
            self.views.append(view)
            excess = self.views[:max(0, len(self.views) - self.max_live)]
        for old in older:
            old.freeze("a newer view of this stage is live")
        for old in excess:
            old.freeze(f"only the {self.max_live} newest views update")
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="fusionkit-live-views")
                self._thread.start()
        self._wake.set()

    def discard(self, view: LiveView) -> None:
        with self._lock:
            if view in self.views:
                self.views.remove(view)

    def live(self) -> list[LiveView]:
        with self._lock:
            self.views = [v for v in self.views if not v.closed and v.frozen is None]
            return list(self.views)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            views = self.live()
            if not views:
                with self._lock:
                    if not self.views:  # a view added meanwhile keeps the thread going
                        self._thread = None
                        return
                continue
            snap, error = None, None
            wanted = None if any(v.names is None for v in views) else tuple(
                sorted({n for v in views for n in v.names}))
            try:
                snap = snapshot(wanted, timeout=5.0)
            except NotConnectedError as exc:
                for v in views:
                    v.freeze(str(exc))
                continue
            except Exception as exc:  # a busy or restarting controller: try again
                error = f"{type(exc).__name__}: {exc}"
            for v in views:
                if v.frozen is None and not v.closed:
                    try:
                        v.refresh(snap, error)
                    except Exception as exc:  # a closed widget, mid-update
                        v.freeze(f"{type(exc).__name__}: {exc}")
            self.ticks += 1
            self._wake.wait(1.0 / self.rate)
            self._wake.clear()


_poller = _Poller()


def stop_updates(timeout: float = 10.0) -> None:
    """Freeze every live view and wait (up to ``timeout`` seconds) for the poller thread to
    end: ``fk.shutdown()`` calls it before Ray goes down (see ``dashboard.stop_updates``)."""
    for view in _poller.live():
        view.freeze("the pipeline was shut down")
    _poller._wake.set()
    thread = _poller._thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)


def configure(rate: float | None = None, max_live: int | None = None) -> None:
    """Set the refresh rate (Hz) and how many views update at once."""
    if rate is not None:
        _poller.rate = float(rate)
    if max_live is not None:
        _poller.max_live = int(max_live)


def live_views() -> list[LiveView]:
    """The views being updated now."""
    return _poller.live()
