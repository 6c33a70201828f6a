"""Stream stage throughput: events/s and per-stage latency against a plain pandas loop.

For each batch size (1, 100, 1000, 5000) the same synthetic click generator
(``fusionkit.sources.Synthetic``, ``rate=None``: as fast as it is taken) feeds the same
vectorized ``fn`` three ways, in one run:

- ``pandas loop``: one process, ``fn(source.read(batch_size))`` in a loop; the baseline.
  Its latency is the time of one read plus ``fn``.
- ``stream``: ``fk.stream(..., fn=fn, batch_size=...)`` with no downstream; the stage
  validates each batch against its schema, runs ``fn`` and reports metrics (its output is
  only kept for ``peek``).
- ``stream -> train``: the same stream feeding a train stage whose learner does nothing
  (predicts zeros, learns nothing), so the figure is the cost of the hand-off between
  two actors (bounded, through the object store) and the train stage's bookkeeping.

Events/s are counted from the stages' own totals over ``--seconds`` after a warm-up; the
latency is the stage's per-batch processing time over its whole run (the monitor's
sample), p50 and p99. Target on a 2-core machine: >= 100k events/s at batch >= 1000.
Ray runs its workers at a lower priority (nice 15) than this process, which runs the
pandas loop: on a busy machine the stages lose more to other work than the baseline does,
so the load average (at the start and at the end) goes into the result.

Run ``python benchmarks/stream_throughput.py`` (about 2 minutes) or ``--quick``. Prints a
table and writes benchmarks/results/stream_throughput.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, summary_ms, table, write_result  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.sources import Synthetic  # noqa: E402

SIZES = (1, 100, 1000, 5000)
TARGET = 100_000  # events/s at batch >= 1000


def featurize(df: pd.DataFrame) -> pd.DataFrame:
    """A typical vectorized feature function: a log, a threshold, a flag, a cycle."""
    return df.assign(log_price=np.log(df["price"]), long_dwell=df["dwell"] > 10.0,
                     mobile=df["device"] == "mobile",
                     hour_sin=np.sin(2 * np.pi * df["hour"] / 24.0))


class Discard:
    """A learner that learns nothing: the train stage's cost without a model's."""

    task = "classification"

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return np.zeros(len(X), dtype=np.int64)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        pass

    def get_state(self) -> bytes:
        return b""

    def set_state(self, state: bytes) -> None:
        pass


def pandas_loop(batch_size: int, seconds: float) -> dict[str, Any]:
    """The baseline: read and transform in one process, as fast as it goes."""
    src = Synthetic("baseline", rate=None, seed=0)
    src.open()
    n, lat = 0, []
    start = time.perf_counter()
    end = start + seconds
    while (t := time.perf_counter()) < end:
        out = featurize(src.read(batch_size))
        lat.append(time.perf_counter() - t)
        n += len(out)
    elapsed = time.perf_counter() - start
    s = summary_ms(lat)
    return {"pipeline": "pandas loop", "batch_size": batch_size, "events": n,
            "seconds": round(elapsed, 2), "events_per_s": round(n / elapsed),
            "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"]}


def _events(name: str) -> int:
    return int(sum(i.get("totals", {}).get("events_in", 0) for i in fk.infos(name)))


def _latency(name: str) -> dict[str, float]:
    return ray.get(fk.api.handles()["monitor"].latency.remote(name))


def fusion(batch_size: int, seconds: float, warmup: float, train: bool) -> dict[str, Any]:
    """Run the stream (and a discarding train stage) and count what the last stage took."""
    name = f"tp-{batch_size}"
    last = f"{name}-train" if train else name
    src = fk.sources.synthetic(name, rate=None, seed=0)
    # alone, it runs at once (start=True); else it waits for its train stage, then reads
    fk.stream(name, source=src, fn=featurize, batch_size=batch_size, start=not train)
    if train:
        fk.train(last, on=name, model=Discard(), label="clicked", publish_every="60s")
    deadline = time.monotonic() + max(warmup, 0.1)
    while time.monotonic() < deadline or _events(last) == 0:
        fk.check()
        time.sleep(0.1)
    e0, t0 = _events(last), time.monotonic()
    time.sleep(seconds)
    e1, t1 = _events(last), time.monotonic()
    fk.check()
    time.sleep(0.6)  # one more report interval, so the monitor has the latest latencies
    row = {"pipeline": "stream -> train" if train else "stream", "batch_size": batch_size,
           "events": e1 - e0, "seconds": round(t1 - t0, 2),
           "events_per_s": round((e1 - e0) / (t1 - t0))}
    lat = _latency(name)
    row.update(p50_ms=round(lat["p50_ms"], 3), p99_ms=round(lat["p99_ms"], 3))
    if train:
        lat = _latency(last)
        row.update(train_p50_ms=round(lat["p50_ms"], 3), train_p99_ms=round(lat["p99_ms"], 3))
    fk.stop()
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seconds", type=float, default=6.0, help="measured per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--no-train", action="store_true", help="skip stream -> train")
    parser.add_argument("--quick", action="store_true", help="2 s per run, a smoke test")
    parser.add_argument("--out", default="stream_throughput")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warmup = 2.0, 1.0

    load_start = round(os.getloadavg()[0], 2)
    fk.connect()
    rows = []
    for bs in args.sizes:
        rows.append(pandas_loop(bs, args.seconds))
        rows.append(fusion(bs, args.seconds, args.warmup, train=False))
        if not args.no_train:
            rows.append(fusion(bs, args.seconds, args.warmup, train=True))
        for r in rows[-(2 if args.no_train else 3):]:
            print(f"  batch {r['batch_size']:>5} {r['pipeline']:<16} "
                  f"{r['events_per_s']:>12,} events/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms",
                  flush=True)
    base = {r["batch_size"]: r["events_per_s"] for r in rows if r["pipeline"] == "pandas loop"}
    for r in rows:
        r["vs_pandas"] = round(r["events_per_s"] / base[r["batch_size"]], 3) \
            if base.get(r["batch_size"]) else None
    stream_big = [r["events_per_s"] for r in rows
                  if r["pipeline"] == "stream" and r["batch_size"] >= 1000]
    result = {
        "benchmark": "stream_throughput",
        "machine": machine(),
        "settings": {"seconds": args.seconds, "warmup": args.warmup, "sizes": args.sizes,
                     "fn": "featurize (4 vectorized columns)", "source": "Synthetic(rate=None)",
                     "pid": os.getpid(), "load_avg_1m_start": load_start},
        "target": {"events_per_s": TARGET, "at_batch_size": ">= 1000",
                   "met": bool(stream_big) and min(stream_big) >= TARGET},
        "results": rows,
    }
    fk.shutdown()
    print()
    print(table(rows, ["pipeline", "batch_size", "events_per_s", "vs_pandas", "p50_ms",
                       "p99_ms", "train_p50_ms", "train_p99_ms"]))
    print(f"\ntarget >= {TARGET:,} events/s at batch >= 1000 (stream): "
          f"{'met' if result['target']['met'] else 'MISSED'}")
    print(f"wrote {write_result(args.out, result)}")
    return result


if __name__ == "__main__":
    main()
