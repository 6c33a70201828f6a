"""What the served log costs a client: serve p50 with and without ``log=``, one run.

Two serve stages answer from the same live version of one train stage (the River model of
``fusionkit.demo.ctr_model``), on one Ray Serve, one replica each: ``bl-plain`` without a
log, ``bl-logged`` with ``log="bl-served", feedback="bl-fb"`` (each answered row appended
to the replica's JSON-lines segment before the answer leaves). Sequential requests over
HTTP through Serve's proxy, of 1 and of 100 rows, in interleaved rounds so that other load
on the machine falls on both alike. Also timed in this process: ``LogWriter.append`` of the
same served records alone (the part of a request the log adds).

Target (issue 20): p50 with the log <= 1.10 x p50 without.

Run ``python benchmarks/served_log.py`` (a few minutes on 2 cores) or ``--quick``. Prints a
table and writes benchmarks/results/served_log.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

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
from fusionkit.serving.served_log import served_records  # noqa: E402
from fusionkit.sources.logfiles import LogWriter  # noqa: E402

STREAM, MODEL, PLAIN, LOGGED = "bl-clicks", "bl-ctr", "bl-plain", "bl-logged"


JSON = {"content-type": "application/json"}


def append_cost(rows: list[dict], size: int, n: int) -> dict:
    """``LogWriter.append`` of one request's served records, alone, in this process."""
    batch = (rows * (size // len(rows) + 1))[:size]
    with tempfile.TemporaryDirectory() as folder:
        w = LogWriter(folder, name="bench")
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            recs = served_records([f"{i:032x}" for i in range(size)], batch, [True] * size,
                                  [0.5] * size, MODEL, 1, "bench", time.time())
            w.append(recs)
            out.append(time.perf_counter() - t0)
        w.close()
    return summary_ms(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, n = (2, 100) if args.quick else (6, 400)
    fk.connect()
    fk.stream(STREAM, source=fk.sources.synthetic(STREAM, rate=1_000, seed=1), batch_size=200)
    fk.train(MODEL, on=STREAM, label="clicked", model=ctr_model(), publish_every=None)
    first_version(MODEL, 120)
    fk.pause(STREAM)  # the model stays as it is; the stream's work stops loading the cores
    port = free_port()
    fk.serve(PLAIN, model=MODEL, port=port)
    fk.serve(LOGGED, model=MODEL, port=port, log="bl-served", feedback="bl-fb")
    sample = fk.peek(STREAM, 5)
    rows = sample.drop(columns=[c for c in sample.columns
                                if c.startswith("_") or c == "clicked"]).to_dict("records")
    urls = {"without log": f"http://127.0.0.1:{port}/{PLAIN}",
            "with log": f"http://127.0.0.1:{port}/{LOGGED}"}
    fk.wait_warm()
    samples: dict[tuple[str, int], list[float]] = {}
    with httpx.Client(timeout=30.0) as client:
        for size in (1, 100):
            body = json.dumps({"rows": (rows * (size // len(rows) + 1))[:size]}).encode()
            for url in urls.values():
                time_http(client, url, body, JSON, 50)  # warm up
            for _ in range(rounds):
                for system, url in urls.items():
                    samples.setdefault((system, size), []).extend(
                        time_http(client, url, body, JSON, n))
    results = []
    for size in (1, 100):
        plain = summary_ms(samples[("without log", size)])
        logged = summary_ms(samples[("with log", size)])
        for system, s in (("without log", plain), ("with log", logged)):
            results.append({"rows": size, "system": system, **s})
        results.append({"rows": size, "system": "ratio p50",
                        "p50_ms": round(logged["p50_ms"] / plain["p50_ms"], 3)})
        results.append({"rows": size, "system": "append alone",
                        **append_cost(rows, size, 2000)})
    print(table(results, ["rows", "system", "n", "p50_ms", "p90_ms", "p99_ms", "max_ms"]))
    path = write_result("served_log", {"machine": machine(), "rounds": rounds,
                                       "per_round": n, "results": results})
    print(f"wrote {path}")
    ratios = [r["p50_ms"] for r in results if r["system"] == "ratio p50"]
    print("p50 with log / without:", ", ".join(f"{x:.3f}" for x in ratios),
          "(target <= 1.10)", "met" if max(ratios) <= 1.10 else "NOT met")
    fk.shutdown()


if __name__ == "__main__":
    main()
