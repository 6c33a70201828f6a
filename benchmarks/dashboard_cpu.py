"""The kernel's CPU share spent on the live dashboard, with a pipeline running.

A real JupyterLab and Chromium run ``tests/browser/dashboard_demo.ipynb``: a stream at
2,000 events/s, a train stage publishing every 2 s, a serve stage under 20 requests/s from a
load thread in the kernel. The kernel's process CPU time is measured over the same span
twice, first without the dashboard (the baseline: the pipeline's own driver work, the load
thread), then with the dashboard shown and updating at its default rate in the browser, so
the difference includes everything the dashboard costs the kernel: the updater thread, and
the messages the browser sends back (plotly's trace deltas, heartbeats). Target: <= 10% of
one core.

    python benchmarks/dashboard_cpu.py [--seconds 60] [--interval 333ms]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))

import lab_harness as lab  # noqa: E402

NOTEBOOK = ROOT / "tests" / "browser" / "dashboard_demo.ipynb"
RESULTS = ROOT / "benchmarks" / "results" / "dashboard_cpu.json"
TARGET_PCT = 10.0

START = """import json, threading, time, psutil
_proc = psutil.Process()
_main = threading.main_thread().native_id
def _threads():
    return {t.id: t.user_time + t.system_time for t in _proc.threads()}
def _mark():
    c = _proc.cpu_times()
    d = globals().get("_dash")
    return {"wall": time.monotonic(), "cpu": c.user + c.system, "threads": _threads(),
            "updater": d.update_seconds if d else 0.0, "updates": d.updates if d else 0}
_m0 = _mark()"""

STOP = """_m1 = _mark()
_wall = _m1["wall"] - _m0["wall"]
_main_cpu = _m1["threads"].get(_main, 0) - _m0["threads"].get(_main, 0)
print(json.dumps({"wall_s": _wall, "cpu_pct": 100 * (_m1["cpu"] - _m0["cpu"]) / _wall,
                  "main_thread_pct": 100 * _main_cpu / _wall,
                  "updater_pct": 100 * (_m1["updater"] - _m0["updater"]) / _wall,
                  "updates_per_s": (_m1["updates"] - _m0["updates"]) / _wall}))"""


def measure(page, seconds: float) -> dict:
    lab.kernel_eval(page, START)
    time.sleep(seconds)  # the span measured
    return json.loads(lab.kernel_eval(page, STOP))


def run_cell(page, index: int) -> None:
    page.evaluate("""async (n) => {
        const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = n;
        await window.jupyterapp.commands.execute('notebook:run-cell');
    }""", index)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each span")
    parser.add_argument("--interval", default=None,
                        help="dashboard update interval (default: the dashboard's)")
    args = parser.parse_args()
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    dash = next(i for i, c in enumerate(nb.cells) if "fk.dashboard(" in c.source)
    if args.interval:
        nb.cells[dash].source = f"fk.dashboard(interval={args.interval!r})"
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "fk_dashboard_cpu.ipynb"
    nbformat.write(nb, work)
    print(f"fusionkit dashboard CPU benchmark: {args.seconds:.0f} s per span", flush=True)
    with lab.jupyter_lab(work) as server, lab.chromium(width=1400, height=1700) as page:
        lab.open_notebook(page, server)
        lab.run_cells(page, dash - 1)
        page.wait_for_function(lab.IDLE_KERNEL, timeout=900_000)
        errors = lab.cell_errors(page)
        if errors:
            raise SystemExit(f"the pipeline cells failed: {errors}")
        lab.kernel_eval(page, "assert (fk.status()['status'] == 'running').all()")
        time.sleep(10)  # warm-up: the pipeline settles
        baseline = measure(page, args.seconds)
        print(f"baseline (pipeline, no dashboard): kernel CPU {baseline['cpu_pct']:.1f}%",
              flush=True)
        run_cell(page, dash)
        page.wait_for_function("""() => { const g = document.querySelector(
            '.fk-dashboard .js-plotly-plot'); return g && g.data.some(d => d.x && d.x.length); }""",
            timeout=300_000)
        lab.kernel_eval(page, "_dash = fk.dashboard()" if not args.interval else
                        f"_dash = fk.dashboard(interval={args.interval!r})")
        time.sleep(10)  # warm-up: the charts fill their windows
        shown = measure(page, args.seconds)
        info = json.loads(lab.kernel_eval(
            page, "print(json.dumps({'interval': _dash.interval, 'points': _dash.charts.points(),"
                  " 'active': _dash.active}))"))
        lab.kernel_eval(page, "fk.shutdown()")
    share = shown["cpu_pct"] - baseline["cpu_pct"]
    result = {
        "benchmark": "dashboard_cpu",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": os.getloadavg()},
        "span_s": args.seconds,
        "interval_s": info["interval"],
        "baseline_kernel_cpu_pct": round(baseline["cpu_pct"], 2),
        "with_dashboard_kernel_cpu_pct": round(shown["cpu_pct"], 2),
        "dashboard_share_pct": round(share, 2),
        "updater_thread_pct": round(shown["updater_pct"], 2),
        "main_thread_pct": {"baseline": round(baseline["main_thread_pct"], 2),
                            "with_dashboard": round(shown["main_thread_pct"], 2)},
        "updates_per_s": round(shown["updates_per_s"], 2),
        "points_plotted": info["points"],
        "target_pct": TARGET_PCT,
        "meets_target": share <= TARGET_PCT,
    }
    print(f"with the dashboard at {1 / info['interval']:.1f} Hz: kernel CPU "
          f"{shown['cpu_pct']:.1f}% -> dashboard share {share:.1f}% of one core "
          f"(updater thread {shown['updater_pct']:.1f}%, {shown['updates_per_s']:.1f} updates/s, "
          f"{info['points']} points); target <= {TARGET_PCT:.0f}%: "
          f"{'met' if share <= TARGET_PCT else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
