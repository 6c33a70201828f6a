"""Freshness benchmark: fusionkit's fused loop against a stitched pipeline, same run.

Freshness is, per event, the time from its ingest to the first answer by a model version
that learned it (an event that waits for the next publish waits). Both pipelines learn the
same River model from the same synthetic click stream, paced the same way, and answer the
same load generator (one single-row HTTP request every ``--request-every`` seconds):

- fusionkit: ``fk.stream`` (synthetic source at the rate) -> ``fk.train`` (publishes every
  ``--fk-publish`` seconds, 25 ms by default: it keeps up at every rate here) ->
  ``fk.serve``; freshness from ``fk.freshness(model, since=)``, and the part of it up to
  the version's publication (``to_publish_*``) from ``fk.freshness(model, publish=True)``.
- stitched (``benchmarks/stitched.py``): a stream process writing micro-batches to a Redis
  stream (a real ``redis-server`` on a free loopback port), a trainer process reading it and
  saving the model to a file every P seconds (atomic rename), an HTTP server process
  reloading the file when its mtime changes (polled every Q seconds). Freshness computed
  the same way from the trainer's per-version ingest times and the server's first-answer
  times. Two settings: common (P = 1 s, Q = 100 ms) and aggressive (P = 100 ms, Q = 20 ms).

At 1k and 5k events/s the model is ``fusionkit.demo.ctr_model`` learned per event; at 20k
events/s a cheaper one (scaled numeric features, logistic regression, learned per
micro-batch with River's ``learn_many``) in both pipelines, since per-event River learning
of the demo model runs at about 17-50k events/s here. Only events first answered after a
warm-up count.

Targets: fusionkit p99 <= 100 ms at 20k events/s, >= 10x lower than the stitched common
setting and lower than the stitched aggressive one.

Run ``python benchmarks/freshness.py`` (about 8 minutes) or ``--quick`` for a smoke run.
Prints a table and writes benchmarks/results/freshness.json.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, table, wait_for_warm_hosts, write_result  # noqa: E402
from stitched import make_model  # noqa: E402

import fusionkit as fk  # noqa: E402

HERE = Path(__file__).parent
RATES = (1_000, 5_000, 20_000)
MODELS = {1_000: ("ctr", False), 5_000: ("ctr", False), 20_000: ("numeric", True)}
STITCHED = {"common": (1.0, 0.1), "aggressive": (0.1, 0.02)}  # publish, poll (seconds)
REFERENCE_5K = {"common": {"p50_ms": 612, "p99_ms": 1449},
                "aggressive": {"p50_ms": 67, "p99_ms": 122}}


class Load(threading.Thread):
    """One single-row request every ``every`` seconds; counts answers and failures."""

    def __init__(self, url: str, row: dict[str, Any], every: float):
        super().__init__(daemon=True)
        self.url, self.body, self.every = url, {"rows": [row]}, every
        self.stop_event = threading.Event()
        self.ok = self.failed = 0

    def run(self) -> None:
        with httpx.Client(timeout=30.0) as client:
            next_at = time.perf_counter()
            while not self.stop_event.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                    self.ok += r.status_code == 200
                    self.failed += r.status_code != 200
                except httpx.HTTPError:
                    self.failed += 1
                next_at = max(next_at + self.every, time.perf_counter())
                self.stop_event.wait(next_at - time.perf_counter())

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        self.join()
        return {"requests_ok": self.ok, "requests_failed": self.failed}


def quantiles(fresh_s: np.ndarray) -> dict[str, float]:
    if fresh_s.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    q = np.quantile(fresh_s, [0.5, 0.95, 0.99]) * 1000.0
    return {"p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2])}


# -- fusionkit ---------------------------------------------------------------------------
def run_fusionkit(rate: int, args: argparse.Namespace, port: int) -> dict[str, Any]:
    model_name, mini_batch = MODELS[rate]
    name = f"fr-{rate}-{int(time.time())}"
    fk.stream("fr-clicks", source=fk.sources.synthetic("fr-clicks", rate=rate, seed=11),
              batch_size=args.fk_batch, linger=args.fk_linger)
    fk.train(name, on="fr-clicks", label="clicked", model=make_model(model_name),
             publish_every=args.fk_publish, mini_batch=mini_batch)
    fk.serve("fr-api", model=name, port=port)
    wait_for_warm_hosts()  # before the warm-up and the measurement
    lag_before = _settle("fr-clicks")
    sample = fk.peek("fr-clicks", 1)
    row = sample.drop(columns=[c for c in sample if c.startswith("_") or c == "clicked"])
    load = Load(f"http://127.0.0.1:{port}/fr-api", row.to_dict("records")[0],
                args.request_every)
    load.start()
    time.sleep(args.warmup)
    t0, seen0 = time.time(), _events_seen(name)
    time.sleep(args.duration)
    t1, seen1 = time.time(), _events_seen(name)
    lag_after = _lag("fr-clicks")
    counts = load.stop()
    fresh = fk.freshness(name, since=t0)
    published = fk.freshness(name, publish=True, since=t0)  # ingest -> the version published
    versions = fk.models(name)
    window = versions[(versions["created"] > t0) & (versions["created"] <= t1)]
    fk.stop()
    return {"pipeline": "fusionkit", "rate": rate, "model": model_name,
            "publish_s": args.fk_publish, "poll_s": 0.0,
            **{k: fresh[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
            "to_publish_p50_ms": published["p50_ms"], "to_publish_p99_ms": published["p99_ms"],
            "events": int(fresh["events"]), "learned_per_s": (seen1 - seen0) / (t1 - t0),
            "versions": len(window), "source_lag_s": [round(lag_before, 3), round(lag_after, 3)],
            **counts}


def _events_seen(name: str) -> int:
    return int(fk.status().loc[name, "events"])


def _lag(stream: str) -> float:
    """Seconds the stream's source is behind its schedule (backpressure from a slow trainer)."""
    m = fk.metrics(stream)
    return float(m["lag_s"].iloc[-1]) if "lag_s" in m and len(m) else float("nan")


def _settle(stream: str, timeout: float = 60.0) -> float:
    """Wait (up to ``timeout``) until the source keeps to its schedule after the start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lag = _lag(stream)
        if lag < 0.05:
            return lag
        time.sleep(0.5)
    return _lag(stream)


# -- stitched ----------------------------------------------------------------------------
def _spawn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "stitched.py"), *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_http(url: str, procs: list[subprocess.Popen], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"a stitched process exited: {p.stderr.read().decode()[-2000:]}")
        try:
            if httpx.post(url, json={"rows": []}, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer with a model within {timeout}s")


def run_stitched(rate: int, setting: str, args: argparse.Namespace,
                 redis_port: int) -> dict[str, Any]:
    import redis

    publish, poll = STITCHED[setting]
    model_name, mini_batch = MODELS[rate]
    redis.Redis(port=redis_port).delete("events")
    folder = Path(tempfile.mkdtemp(prefix="fk-stitched-"))
    port = free_port()
    serve = _spawn("serve", "--folder", folder, "--port", port, "--poll", poll)
    train = _spawn("train", "--redis", redis_port, "--folder", folder, "--publish", publish,
                   "--model", model_name, *(["--mini-batch"] if mini_batch else []))
    time.sleep(1.0)  # the trainer reads from the stream's end: let it start reading first
    stream = _spawn("stream", "--redis", redis_port, "--rate", rate, "--seed", 11)
    url = f"http://127.0.0.1:{port}/predict"
    try:
        t0, t1, counts, served = measure_stitched(url, [serve, train, stream], args)
    finally:
        for p in (stream, train):
            p.terminate()
        for p in (stream, train):
            p.wait(timeout=30)
        serve.terminate()
        serve.wait(timeout=30)
    versions = pickle.loads((folder / "versions.pkl").read_bytes())
    shutil.rmtree(folder, ignore_errors=True)
    fresh, learned, n_versions = stitched_freshness(versions, served, t0, t1)
    return {"pipeline": f"stitched {setting}", "rate": rate, "model": model_name,
            "publish_s": publish, "poll_s": poll, **quantiles(fresh), "events": int(fresh.size),
            "learned_per_s": learned / (t1 - t0), "versions": n_versions, **counts}


def measure_stitched(url: str, procs: list[subprocess.Popen], args: argparse.Namespace
                     ) -> tuple[float, float, dict[str, Any], dict[int, float]]:
    """Once the stitched server at ``url`` answers (``procs``, its processes, must stay
    alive meanwhile), send requests all along ``args.warmup`` then ``args.duration``
    seconds: the measured window ``(t0, t1)``, the request counts, and when the server
    first answered with each version."""
    _wait_http(url, procs)
    load = Load(url, _feature_row(), args.request_every)
    load.start()
    time.sleep(args.warmup)
    t0 = time.time()
    time.sleep(args.duration)
    t1 = time.time()
    counts = load.stop()
    served = {int(k): v for k, v in httpx.get(url.replace("predict", "served")).json().items()}
    return t0, t1, counts, served


def stitched_freshness(versions: dict[int, np.ndarray], served: dict[int, float],
                       t0: float, t1: float) -> tuple[np.ndarray, int, int]:
    """Per event: first answer by a version that learned it (that version or a later one),
    minus its ingest time; only events first answered after ``t0``."""
    order = sorted(versions)
    first, out = np.inf, []
    answered_at = {}
    for v in reversed(order):  # earliest answer by this version or any later one
        first = min(first, served.get(v, np.inf))
        answered_at[v] = first
    learned = n_versions = 0
    for v in order:
        at, ingest = answered_at[v], versions[v]
        if t0 < at <= t1 + 5.0 and np.isfinite(at):
            out.append(at - ingest)
        if t0 < ingest.max() <= t1:
            learned += ingest.size
            n_versions += 1
    return (np.concatenate(out) if out else np.empty(0)), learned, n_versions


def _feature_row() -> dict[str, Any]:
    from fusionkit.sources.synthetic import Synthetic

    src = Synthetic("clicks", rate=None, seed=1)
    src.open()
    row = src.read(1).drop(columns=["clicked", "_event_time", "_offset"])
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.iloc[0].items()}


def start_redis() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--warmup", type=float, default=None, help="seconds (default 6)")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default 20)")
    parser.add_argument("--fk-publish", type=float, default=0.025, help="train publish every")
    parser.add_argument("--fk-linger", type=float, default=0.01, help="stream linger")
    parser.add_argument("--fk-batch", type=int, default=500, help="stream batch size")
    parser.add_argument("--request-every", type=float, default=0.01)
    parser.add_argument("--skip-stitched", action="store_true")
    parser.add_argument("--out", default=None, help="result name (default freshness)")
    args = parser.parse_args()
    args.warmup = args.warmup or (3.0 if args.quick else 6.0)
    args.duration = args.duration or (5.0 if args.quick else 20.0)

    fk.connect()
    port = free_port()
    from fusionkit.serving.deploy import start

    start("127.0.0.1", port)  # Ray Serve's proxy up before any timed run
    redis_proc, redis_port = start_redis()
    rows = []
    try:
        for rate in args.rates:
            rows.append(run_fusionkit(rate, args, port))
            print(table(rows[-1:], COLUMNS), flush=True)
            if args.skip_stitched:
                continue
            for setting in STITCHED:
                rows.append(run_stitched(rate, setting, args, redis_port))
                print(table(rows[-1:], COLUMNS), flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    print("\nFreshness: ingest -> first answer by a version that learned the event (ms)")
    print(table(rows, COLUMNS))
    print(f"reference, stitched at 5k events/s measured elsewhere: {REFERENCE_5K}")
    targets = check_targets(rows)
    print("Targets:", targets)
    result = {"benchmark": "freshness", "quick": args.quick, "machine": machine(),
              "config": {k: v for k, v in vars(args).items()}, "models": {
                  str(r): {"model": m, "mini_batch": mb} for r, (m, mb) in MODELS.items()},
              "results": rows, "reference_stitched_5k": REFERENCE_5K, "targets": targets}
    path = write_result(args.out or ("freshness_quick" if args.quick else "freshness"), result)
    print(f"wrote {path}")
    fk.shutdown()


COLUMNS = ["pipeline", "rate", "model", "publish_s", "poll_s", "p50_ms", "p95_ms", "p99_ms",
           "to_publish_p50_ms", "to_publish_p99_ms", "events", "learned_per_s", "versions", "requests_ok", "requests_failed"]


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["pipeline"], r["rate"]): r for r in rows}
    fused = by.get(("fusionkit", 20_000))
    out: dict[str, Any] = {}
    if fused is None:
        return out
    out["fusionkit_p99_20k_ms"] = round(fused["p99_ms"], 1)
    out["p99_le_100ms"] = fused["p99_ms"] <= 100
    common, aggressive = by.get(("stitched common", 20_000)), by.get(("stitched aggressive",
                                                                       20_000))
    if common:
        out["x_lower_than_common_p99"] = round(common["p99_ms"] / fused["p99_ms"], 1)
        out["ge_10x_lower_than_common"] = out["x_lower_than_common_p99"] >= 10
    if aggressive:
        out["lower_than_aggressive_p50_p99"] = (fused["p99_ms"] < aggressive["p99_ms"]
                                                and fused["p50_ms"] < aggressive["p50_ms"])
    return out


if __name__ == "__main__":
    main()
