"""Helpers the serving benchmarks share: ports, latency summaries, result files."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_http(client: Any, url: str, body: bytes, headers: dict, n: int) -> list[float]:
    """Seconds of each of ``n`` POSTs of ``body`` to ``url`` (one after another); a request
    not answered 200 stops the run."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.post(url, content=body, headers=headers)
        out.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"{url} answered {r.status_code}: {r.text[:200]}")
    return out


def first_version(model: str, timeout: float) -> int:
    """Publish train stage ``model`` until it has learned something to publish (or
    ``timeout`` seconds pass); the version, or 0."""
    import fusionkit as fk

    deadline = time.monotonic() + timeout
    while not (version := fk.publish(model)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return version


def wait_for_warm_hosts() -> None:
    """Defining stages takes warm hosts, and the controller starts new spares (processes
    importing pandas and River on the same cores): wait for them before timing anything."""
    import fusionkit as fk

    fk.wait_warm()


def summary_ms(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """Count, p50, p90, p99, max and mean of durations given in seconds, in milliseconds."""
    arr = np.asarray(seconds, dtype="float64") * 1000.0
    if arr.size == 0:
        return {"n": 0, "p50_ms": float("nan"), "p90_ms": float("nan"),
                "p99_ms": float("nan"), "max_ms": float("nan"), "mean_ms": float("nan")}
    p50, p90, p99 = np.quantile(arr, [0.5, 0.9, 0.99])
    return {"n": int(arr.size), "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3),
            "p99_ms": round(float(p99), 3), "max_ms": round(float(arr.max()), 3),
            "mean_ms": round(float(arr.mean()), 3)}


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPUs, load, versions."""
    import ray
    import river

    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "ray": ray.__version__,
            "river": river.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``benchmarks/results/<name>.json`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain fixed-width text table of ``rows`` (dicts) over ``columns``."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
