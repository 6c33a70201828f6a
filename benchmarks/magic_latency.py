"""How long a ``%fusion`` cell takes to give control back, against the plain Python API.

A real IPython shell runs the magic cells of the quickstart on a local Ray, after
``%fusion connect``; each round also calls the same API functions directly (the baseline),
interleaved so other load on the machine falls on both alike. Reported: per cell, the p50 /
max seconds to return, and the magic's own overhead (magic minus API, p50).

Cells measured: ``%%fusion stream`` (re-defining the stage: a warm host takes over),
``%%fusion train`` (the same), ``%fusion serve`` (returns while Ray Serve starts) and
``%fusion status``. Each define starts with the controller's warm pool full, as after a
user's pause between cells (re-running cells faster than the pool refills makes a define
wait for a new Ray worker process, seconds). Target: a stage cell returns within 1 s after
connect.

Run ``python benchmarks/magic_latency.py [--rounds N]``; writes
benchmarks/results/magic_latency.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, table, write_result  # noqa: E402

STREAM_CELL = '''%%fusion stream clicks --rate 2000 --batch 250
def featurize(df):
    df["evening"] = (df["hour"] >= 18).astype("int64")
    return df
'''
TRAIN_CELL = '''%%fusion train ctr --on clicks --label clicked --publish-every 1s
from fusionkit.demo import ctr_model
model = ctr_model()
'''


def featurize(df):
    df["evening"] = (df["hour"] >= 18).astype("int64")
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()

    from IPython.core.interactiveshell import InteractiveShell

    import fusionkit as fk
    from fusionkit.demo import ctr_model

    shell = InteractiveShell.instance()

    def cell(code: str) -> float:
        t0 = time.perf_counter()
        shell.run_cell(code).raise_error()
        return time.perf_counter() - t0

    def api(call, *args, **kwargs) -> float:
        t0 = time.perf_counter()
        call(*args, **kwargs)
        return time.perf_counter() - t0

    connect_s = cell("%load_ext fusionkit") + cell("%fusion connect")
    port = free_port()
    times: dict[str, list[float]] = {k: [] for k in (
        "stream magic", "stream api", "train magic", "train api", "status magic", "status api")}
    cell(STREAM_CELL)
    cell(TRAIN_CELL)
    serve_first = cell(f"%fusion serve ctr-api --model ctr --port {port}")
    shell.run_cell("%fusion wait ctr-api --timeout 3min").raise_error()
    serve_again = cell(f"%fusion serve ctr-api --model ctr --port {port}")
    def warm() -> None:  # as after a user's pause: the controller's spare hosts are ready
        fk.wait_warm(120.0)

    for _ in range(opts.rounds):
        src = fk.sources.synthetic("clicks", rate=2000)
        warm()
        times["stream magic"].append(cell(STREAM_CELL))
        warm()
        times["stream api"].append(api(fk.stream, "clicks", source=src, fn=featurize,
                                       batch_size=250))
        warm()
        times["train magic"].append(cell(TRAIN_CELL))
        warm()
        times["train api"].append(api(fk.train, "ctr", on="clicks", label="clicked",
                                      model=ctr_model(), publish_every="1s"))
        times["status magic"].append(cell("%fusion status"))
        times["status api"].append(api(fk.status))
    fk.stop()

    import numpy as np

    rows = []
    for what in ("stream", "train", "status"):
        magic, base = np.array(times[f"{what} magic"]), np.array(times[f"{what} api"])
        rows.append({"cell": what, "magic_p50_s": float(np.median(magic)),
                     "magic_max_s": float(magic.max()), "api_p50_s": float(np.median(base)),
                     "api_max_s": float(base.max()),
                     "overhead_p50_ms": float(np.median(magic - base) * 1000)})
    rows.append({"cell": "serve (first, Serve starting)", "magic_p50_s": serve_first,
                 "magic_max_s": serve_first})
    rows.append({"cell": "serve (re-run)", "magic_p50_s": serve_again, "magic_max_s": serve_again})
    print(f"connect (load_ext + %fusion connect): {connect_s:.1f} s")
    print(table(rows, ["cell", "magic_p50_s", "magic_max_s", "api_p50_s", "api_max_s",
                       "overhead_p50_ms"]))
    path = write_result("magic_latency", {"machine": machine(), "rounds": opts.rounds,
                                          "connect_s": connect_s, "cells": rows,
                                          "raw": times, "target_s": 1.0})
    print(f"wrote {path}")
    fk.shutdown()


if __name__ == "__main__":
    main()
