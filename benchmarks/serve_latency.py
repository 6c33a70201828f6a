"""Serve latency benchmark: fusionkit's serve stage against a bare Ray Serve deployment.

Two parts, one run, one Ray Serve:

1. Request latency. The same River model (the live version of a fusionkit train stage,
   ``fusionkit.demo.ctr_model``) answers sequential requests of 1 and of 100 rows, over
   HTTP and through a Python handle, from

   - fusionkit's serve stage (``fk.serve``): request validation against the model's
     schema, the model reference read once per request, metrics to the monitor;
   - a bare Ray Serve deployment holding the same model object: JSON in, River's
     ``predict_proba_one`` per row, JSON out. No registry, no validation, no metrics.

   Both use the same deployment options; the targets are measured in interleaved rounds
   so that other load on the machine falls on both alike. A third system, the same serve
   stage with ``retry=True`` (the default with two or more replicas), measures what the
   retrying HTTP front costs a request. Two more measure what a shadow model costs the
   client: the serve stage logging what it serves (``log=``), and the same with a shadow
   (``shadow=[...]``: a second model answering every request off the response path).
2. Model swaps under load. One client (a process of its own) posts requests back to back
   while the model changes 100 times: in fusionkit, ``fk.publish`` makes a new version live
   and the replica swaps it in between requests; in bare Serve, the same version states go
   in through Serve's own path, ``user_config`` + ``reconfigure()`` (``serve.run`` with a
   new config).
   Reported: the longest request and p99 during the swaps, failed requests, and the time
   from a swap being asked for to the first answer by the new version.

Targets: fusionkit p50 <= 1.2x bare Serve; longest request during swaps <= 50 ms; with one
shadow model, client p50 and p99 <= 1.1x the same stage without it (both logging what they
serve), for requests of 1 and of 100 rows, over HTTP and through a handle.

Run ``python benchmarks/serve_latency.py`` (about 10 minutes on 2 cores: Serve's own
swaps take seconds each) or ``--quick`` for a smoke run. Prints tables and writes
benchmarks/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import ray

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    first_version,
    free_port,
    machine,
    summary_ms,
    table,
    time_http,
    write_result,
)

import fusionkit as fk  # noqa: E402
from fusionkit.demo import ctr_model  # noqa: E402
from fusionkit.serving.deploy import MAX_ONGOING, QUIET, handle  # noqa: E402
from fusionkit.training.protocol import load_state  # noqa: E402

STREAM, MODEL, API, BARE = "sl-clicks", "sl-ctr", "sl-api", "sl-bare"
FRONTED = "sl-api-retry"  # the same model behind the retrying HTTP front (retry=True)
SHADOW_MODEL = "sl-ctr-2"  # a second model, the shadow
LOGGED, SHADOWED = "sl-api-log", "sl-api-shadow"  # logging what they serve; with a shadow


class BareModel:
    """A River model on Ray Serve with nothing around it; changed by ``reconfigure``."""

    def __init__(self, model: bytes):
        self.model = pickle.loads(model)
        self.version = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.model = pickle.loads(base64.b64decode(config["model"]))
        self.version = config["version"]

    def _answer(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        model, preds, probas = self.model, [], []
        for row in rows:
            p = model.predict_proba_one(row)
            preds.append(max(p, key=p.get) if p else None)
            probas.append(p.get(True, 0.0))
        return {"predictions": preds, "version": self.version, "proba": probas}

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return self._answer(rows)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse(self._answer(json.loads(await request.body())["rows"]))


def deploy_bare(model: bytes, user_config: dict[str, Any] | None = None) -> None:
    """Deploy (or, with a new ``user_config``, reconfigure) the bare application."""
    from ray import serve

    deployment = serve.deployment(BareModel).options(
        name=BARE, num_replicas=1, max_ongoing_requests=MAX_ONGOING,
        ray_actor_options={"num_cpus": 0}, health_check_period_s=2, logging_config=QUIET,
        user_config=user_config)
    serve.run(deployment.bind(model), name=BARE, route_prefix=f"/{BARE}", blocking=False)


def bare_handle() -> Any:
    from ray import serve

    return serve.get_app_handle(BARE)


# -- part 1: request latency -------------------------------------------------------------


def time_handle(h: Any, rows: list[dict], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        answer = h.predict.remote(rows).result(timeout_s=30)
        out.append(time.perf_counter() - t0)
        if "error" in answer:
            raise RuntimeError(f"handle answered {answer}")
    return out


def latency(port: int, rows: list[dict], sizes: list[int], rounds: int, n: int) -> dict:
    urls = {"fusionkit": f"http://127.0.0.1:{port}/{API}",
            "bare": f"http://127.0.0.1:{port}/{BARE}",
            "fusionkit front": f"http://127.0.0.1:{port}/{FRONTED}",
            "fusionkit log": f"http://127.0.0.1:{port}/{LOGGED}",
            "fusionkit shadow": f"http://127.0.0.1:{port}/{SHADOWED}"}
    handles = {"fusionkit": handle(API), "bare": bare_handle(),
               "fusionkit log": handle(LOGGED), "fusionkit shadow": handle(SHADOWED)}
    headers = {"content-type": "application/json"}
    samples: dict[str, list[float]] = {}
    with httpx.Client(timeout=30.0) as client:
        for size in sizes:
            batch = (rows * (size // len(rows) + 1))[:size]
            body = json.dumps({"rows": batch}).encode()
            for system in urls:  # warm the paths up
                time_http(client, urls[system], body, headers, 30)
                if system in handles:  # the front is on the HTTP path only
                    time_handle(handles[system], batch, 30)
            for _ in range(rounds):
                for system in urls:
                    samples.setdefault(f"{system} http {size}", []).extend(
                        time_http(client, urls[system], body, headers, n))
                    if system in handles:
                        samples.setdefault(f"{system} handle {size}", []).extend(
                            time_handle(handles[system], batch, n))
    return {key: summary_ms(v) for key, v in samples.items()}


# -- part 2: swaps under load ------------------------------------------------------------
class Load(threading.Thread):
    """Posts one request after another from a process of its own (``_http_load.py``) and
    keeps every request's start, latency, status and version as they come in."""

    def __init__(self, url: str, rows: list[dict]):
        super().__init__(daemon=True)
        self.url, self.body = url, json.dumps({"rows": rows})
        self.stop_event = threading.Event()
        self.records: list[tuple[float, float, int, int | None]] = []
        # the requests that did not answer 200: start, latency, status, what went wrong
        self.failures: list[tuple[float, float, int, str]] = []
        self.answered = threading.Condition()
        self.proc: subprocess.Popen | None = None

    def run(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "_http_load.py"),
                                      self.url, self.body], stdout=subprocess.PIPE, text=True)
        watcher = threading.Thread(target=self._stop_when_asked, daemon=True)
        watcher.start()
        for line in self.proc.stdout:
            t0, dt, status, version, *detail = line.split(maxsplit=4)
            record = (float(t0), float(dt), int(status), None if version == "None" else int(version))
            if record[2] != 200:
                self.failures.append((*record[:3], json.loads(detail[0]) if detail else ""))
            with self.answered:
                self.records.append(record)
                self.answered.notify_all()
        self.proc.wait()

    def _stop_when_asked(self) -> None:
        self.stop_event.wait()
        self.proc.terminate()

    def latest(self) -> int | None:
        return self.records[-1][3] if self.records else None

    def seen_after(self, version: int, t: float, timeout: float = 120.0) -> float:
        """Seconds from ``t`` until a request started after ``t`` answered with ``version``."""
        found: list[float] = []

        def answered() -> bool:  # the earliest request started after t with that version
            hit = None
            for t0, dt, _, v in reversed(self.records):
                if t0 < t:
                    break
                if v == version:
                    hit = t0 + dt - t
            if hit is not None:
                found.append(hit)
            return hit is not None

        with self.answered:
            if not self.answered.wait_for(answered, timeout):
                raise TimeoutError(f"v{version} was not answered within {timeout}s")
        return found[0]


def swap_report(load: Load, t_from: float, t_to: float, took: list[float]) -> dict:
    during = [r for r in load.records if t_from <= r[0] <= t_to]
    latencies = [r[1] for r in during]
    return {"swaps": len(took), "requests": len(during),
            "failed": sum(1 for r in during if r[2] != 200),
            "longest_request_ms": round(max(latencies) * 1000, 2) if latencies else None,
            "request": summary_ms(latencies), "swap_to_first_answer": summary_ms(took),
            "seconds": round(t_to - t_from, 2)}


def fusionkit_swaps(port: int, rows: list[dict], swaps: int) -> tuple[dict, list[bytes]]:
    """``swaps`` publishes under load; returns the report and each version's River model."""
    registry = fk.api.handles()["registry"]
    load = Load(f"http://127.0.0.1:{port}/{API}", rows)
    load.start()
    while not load.records:
        time.sleep(0.01)
    took, versions = [], []
    t_from = time.perf_counter()
    for _ in range(swaps):
        t0 = time.perf_counter()
        version = fk.publish(MODEL)
        while not version:  # nothing learned since the last version yet
            time.sleep(0.005)
            version = fk.publish(MODEL)
        took.append(load.seen_after(version, t0))
        versions.append(version)
    t_to = time.perf_counter()
    load.stop_event.set()
    load.join()
    # the models for Serve's own swap are fetched after the run: unpickling them in this
    # process while the load thread runs would slow the client being measured
    models = [pickle.dumps(load_state(ray.get(registry.state.remote(MODEL, v))).model)
              for v in versions]
    return swap_report(load, t_from, t_to, took), models


def serve_swaps(port: int, rows: list[dict], models: list[bytes]) -> dict:
    load = Load(f"http://127.0.0.1:{port}/{BARE}", rows)
    load.start()
    while not load.records:
        time.sleep(0.01)
    took = []
    t_from = time.perf_counter()
    for i, model in enumerate(models, start=1):
        t0 = time.perf_counter()
        deploy_bare(models[0], {"version": i, "model": base64.b64encode(model).decode()})
        took.append(load.seen_after(i, t0))
    t_to = time.perf_counter()
    load.stop_event.set()
    load.join()
    return swap_report(load, t_from, t_to, took)


def setup(port: int) -> tuple[list[dict], bytes]:
    """The fusionkit pipeline and the bare deployment; returns request rows and the model."""
    fk.connect()
    fk.stream(STREAM, source=fk.sources.synthetic(STREAM, rate=1_000, seed=5), batch_size=100)
    fk.train(MODEL, on=STREAM, label="clicked", model=ctr_model(), publish_every=None)
    fk.train(SHADOW_MODEL, on=STREAM, label="clicked", model=ctr_model(), publish_every=None)
    first_version(MODEL, 60)
    first_version(SHADOW_MODEL, 60)
    fk.serve(API, model=MODEL, port=port)
    fk.serve(FRONTED, model=MODEL, port=port, retry=True)
    fk.serve(LOGGED, model=MODEL, port=port, log="sl-logged")
    fk.serve(SHADOWED, model=MODEL, port=port, log="sl-shadowed", shadow=[SHADOW_MODEL])
    registry = fk.api.handles()["registry"]
    version = fk.live_version(MODEL)
    model = pickle.dumps(load_state(ray.get(registry.state.remote(MODEL, version))).model)
    deploy_bare(model)
    sample = fk.peek(STREAM, 100)
    rows = sample.drop(columns=[c for c in sample.columns
                                if c.startswith("_") or c == "clicked"]).to_dict("records")
    return rows, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--swaps", type=int, default=None, help="model swaps (default 100)")
    parser.add_argument("--serve-swaps", type=int, default=None,
                        help="swaps through Serve's reconfigure (default: --swaps)")
    args = parser.parse_args()
    rounds, n = (1, 100) if args.quick else (4, 300)
    swaps = args.swaps or (10 if args.quick else 100)
    serve_n = args.serve_swaps or (3 if args.quick else swaps)

    port = free_port()
    t_start = time.time()
    rows, _ = setup(port)
    print(f"fusionkit serve stage and bare Serve up on 127.0.0.1:{port} "
          f"({time.time() - t_start:.0f} s)", flush=True)

    fk.pause(STREAM)  # no learning in the background while latency is measured
    lat = latency(port, rows[:1], [1, 100], rounds, n)
    lat_rows = [{"system": k, **v} for k, v in lat.items()]
    print("\nRequest latency (sequential requests, ms)")
    print(table(lat_rows, ["system", "n", "p50_ms", "p90_ms", "p99_ms", "max_ms"]))
    ratios = {f"{path} {size}": round(lat[f"fusionkit {path} {size}"]["p50_ms"]
                                      / lat[f"bare {path} {size}"]["p50_ms"], 3)
              for path in ("http", "handle") for size in (1, 100)}
    print("p50 fusionkit / bare:", ratios)
    front_cost = {f"http {size}": round(lat[f"fusionkit front http {size}"]["p50_ms"]
                                        / lat[f"fusionkit http {size}"]["p50_ms"], 3)
                  for size in (1, 100)}
    print("p50 with the retrying front / without (the default with 2+ replicas):", front_cost)
    shadow_cost = {f"{path} {size} {q}": round(lat[f"fusionkit shadow {path} {size}"][f"{q}_ms"]
                                               / lat[f"fusionkit log {path} {size}"][f"{q}_ms"], 3)
                   for path in ("http", "handle") for size in (1, 100) for q in ("p50", "p99")}
    print("client latency with one shadow model / without (both logging):", shadow_cost)

    fk.resume(STREAM)
    fk_swaps, models = fusionkit_swaps(port, rows[:1], swaps)
    fk.pause(STREAM)
    sv_swaps = serve_swaps(port, rows[:1], models[:serve_n])
    swap_rows = [{"system": "fusionkit publish", **_flat(fk_swaps)},
                 {"system": "Serve reconfigure", **_flat(sv_swaps)}]
    print("\nModel swaps under load (one client, back-to-back requests)")
    print(table(swap_rows, ["system", "swaps", "requests", "failed", "longest_request_ms",
                            "req_p99_ms", "swap_p50_ms", "swap_max_ms", "seconds"]))

    worst_ratio = max(ratios[k] for k in ("http 1", "handle 1"))
    targets = {
        "p50_ratio_1row_max": worst_ratio, "p50_ratio_target": 1.2,
        "p50_ratio_met": worst_ratio <= 1.2,
        "longest_request_during_swaps_ms": fk_swaps["longest_request_ms"],
        "longest_request_target_ms": 50, "longest_request_met":
            fk_swaps["longest_request_ms"] <= 50 and fk_swaps["failed"] == 0,
        **{f"shadow_{q}_ratio_max": max(shadow_cost[f"{p} {size} {q}"]
                                        for p in ("http", "handle") for size in (1, 100))
           for q in ("p50", "p99")},
        "shadow_ratio_target": 1.1,
    }
    targets["shadow_ratio_met"] = max(targets["shadow_p50_ratio_max"],
                                      targets["shadow_p99_ratio_max"]) <= 1.1
    print("\nTargets:", targets)
    result = {"benchmark": "serve_latency", "quick": args.quick, "machine": machine(),
              "config": {"rounds": rounds, "requests_per_round": n, "model": "demo.ctr_model",
                         "swaps": swaps, "serve_swaps": serve_n},
              "latency": lat, "p50_ratio": ratios, "front_p50_ratio": front_cost,
              "shadow_ratio": shadow_cost,
              "swaps": {"fusionkit": fk_swaps, "serve_reconfigure": sv_swaps},
              "targets": targets}
    path = write_result("serve_latency_quick" if args.quick else "serve_latency", result)
    print(f"wrote {path}")
    fk.stop()
    fk.shutdown()


def _flat(report: dict) -> dict:
    return {**report, "req_p99_ms": report["request"]["p99_ms"],
            "swap_p50_ms": report["swap_to_first_answer"]["p50_ms"],
            "swap_max_ms": report["swap_to_first_answer"]["max_ms"]}


if __name__ == "__main__":
    main()
