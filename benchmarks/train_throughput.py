"""Train stage throughput: events/s of ``fk.train`` against River's own evaluation, same run.

One stream of synthetic clicks (``fusionkit.sources.Synthetic``, seed 0) is generated once,
in this process, as a DataFrame of five numeric features (log price and log dwell
standardized with the generator's parameters, standardized age, hour, position) and the
``clicked`` label. Every row of the table learns exactly that stream:

- ``river progressive_val_score``: one process, ``evaluate.progressive_val_score`` over
  ``stream.iter_pandas`` with ``StandardScaler | LogisticRegression`` and
  ``metrics.Accuracy``; the baseline.
- ``learner in process``: the same model through fusionkit's learner adapter and
  prequential metrics (accuracy and log loss, cumulative and over the last 1000 events),
  in one process without Ray: what the train stage's actor does per batch.
- ``train stage``: ``fk.sources.replay(df, rate=None)`` -> ``fk.stream`` (no function) ->
  ``fk.train`` (publishing a version every ``--publish`` seconds), at each batch size, with
  the River model (learned event by event inside the actor, as ``progressive_val_score``
  does) and with scikit-learn's ``SGDClassifier(loss="log_loss")`` (one ``partial_fit``
  per batch, a vectorized learner).

Events/s of a train stage: the events learned over the time from ``fk.resume`` to the last
one learned (``events_per_s``), and over the middle 10-90% of the run (``steady_per_s``,
without the start and the tail). Latency: event -> version published (``fk.freshness(name,
publish=True)``: from each event's ingest to the publish of the first version that learned
it), p50 and p99, over every event; with ``rate=None`` the source runs ahead of the
trainer and these include the time events wait in the bounded queue in front of it. A
``paced`` run feeds the River model at ``--paced-rate`` events/s (below its capacity), where
the latency is that of the stage itself. ``train_p50_ms``/``train_p99_ms`` are the stage's
per-batch processing times.

Targets: with the River model at least ``progressive_val_score``'s events/s; with the
vectorized learner >= 100k events/s (at batch >= 1000).

Run ``python benchmarks/train_throughput.py`` (about 3 minutes) or ``--quick``. Prints a
table and writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from river import evaluate, linear_model, metrics, preprocessing, stream

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table, wait_for_warm_hosts, write_result  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.sources import Synthetic  # noqa: E402
from fusionkit.training.learners import adapt  # noqa: E402
from fusionkit.training.prequential import Prequential  # noqa: E402

SIZES = (100, 1000, 5000)
FEATURES = ["z_price", "z_dwell", "z_age", "hour", "position"]
TARGET_VECTORIZED = 100_000  # events/s at batch >= 1000


def river_model():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def sgd_model():
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01)


LEARNERS = {"river": (river_model, {}), "sgd": (sgd_model, {"classes": [0, 1]})}


def clicks(n: int) -> pd.DataFrame:
    """``n`` synthetic click events: five numeric features and the ``clicked`` label."""
    src = Synthetic("train-bench", rate=None, seed=0)
    src.open()
    df = src.read(n)
    return pd.DataFrame({
        "z_price": (np.log(df["price"]) - 3.0) / 0.8,
        "z_dwell": (np.log(df["dwell"]) - 1.5) / 0.9,
        "z_age": (df["age"] - 38.0) / 12.0,
        "hour": df["hour"].astype("float64"),
        "position": df["position"].astype("float64"),
        "clicked": df["clicked"].astype("int64"),
    })


def river_baseline(df: pd.DataFrame) -> dict[str, Any]:
    """River's own prequential evaluation, one process."""
    t0 = time.perf_counter()
    acc = evaluate.progressive_val_score(stream.iter_pandas(df[FEATURES], df["clicked"]),
                                         river_model(), metrics.Accuracy())
    elapsed = time.perf_counter() - t0
    return {"pipeline": "river progressive_val_score", "learner": "river", "batch_size": 1,
            "events": len(df), "seconds": round(elapsed, 2),
            "events_per_s": round(len(df) / elapsed), "accuracy": round(acc.get(), 4)}


def in_process(df: pd.DataFrame, batch_size: int) -> dict[str, Any]:
    """fusionkit's learner and prequential metrics on the batches, no Ray."""
    learner, pq = adapt(river_model(), features=FEATURES), Prequential("classification")
    batches = [df.iloc[i:i + batch_size] for i in range(0, len(df), batch_size)]
    t0 = time.perf_counter()
    for b in batches:
        pq.update(b["clicked"], learner.predict_learn(b, b["clicked"]))
        pq.values()
    elapsed = time.perf_counter() - t0
    return {"pipeline": "learner in process", "learner": "river", "batch_size": batch_size,
            "events": len(df), "seconds": round(elapsed, 2),
            "events_per_s": round(len(df) / elapsed),
            "accuracy": round(pq.values()["accuracy"], 4)}


def _info(name: str) -> dict[str, Any]:
    return fk.infos(name)[0]


def train_stage(df: pd.DataFrame, learner: str, batch_size: int, publish: float,
                rate: float | None = None, timeout: float = 180.0,
                drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """Replay ``df`` through a stream and a train stage; time the learning of every event.
    With ``drift``, the train stage is watched for drift (``fk.watch_drift(**drift)``)."""
    make, options = LEARNERS[learner]
    name = f"tt-{learner}-{batch_size}-{'paced' if rate else 'max'}"
    fk.stream(f"{name}-src", source=fk.sources.replay(df, rate=rate), batch_size=batch_size,
              paused=True)
    fk.train(name, on=f"{name}-src", label="clicked", model=make(), features=FEATURES,
             publish_every=publish, **options)
    if drift is not None:
        fk.watch_drift(name, **drift)
    fk.check()
    wait_for_warm_hosts()
    n, samples = len(df), []
    fk.resume(f"{name}-src")
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        seen = int(_info(name).get("events_seen", 0))
        samples.append((time.monotonic() - t0, seen))
        if seen >= n or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # polling the stage costs it CPU: not too often
    elapsed, learned = samples[-1]
    fk.check()
    fk.publish(name)  # the events learned after the last timed version
    time.sleep(1.2)  # the next metric reports and the last version reach the monitor
    info = _info(name)
    fresh = fk.freshness(name, publish=True)
    lat = ray.get(fk.api.handles()["monitor"].latency.remote(name))
    row = {"pipeline": "train stage" + (f" paced {rate:,.0f}/s" if rate else ""),
           "learner": learner, "batch_size": batch_size, "events": learned,
           "seconds": round(elapsed, 2), "events_per_s": round(learned / elapsed),
           "steady_per_s": _steady(samples, n),
           "accuracy": round(info["metrics"].get("accuracy", float("nan")), 4),
           "versions": int(info.get("published", 0)),
           "publish_p50_ms": round(fresh["p50_ms"], 1), "publish_p99_ms": round(fresh["p99_ms"], 1),
           "train_p50_ms": round(lat["p50_ms"], 3), "train_p99_ms": round(lat["p99_ms"], 3),
           "complete": learned >= n, "drift_watched": drift is not None,
           "cpu_learning": info.get("cpu_learning"), "cpu_drift": info.get("cpu_drift"),
           "cpu_drift_reporting": info.get("cpu_drift_reporting")}
    fk.stop()
    return row


def _steady(samples: list[tuple[float, int]], n: int) -> int | None:
    """Events/s between the samples where 10% and 90% of the events had been learned."""
    t = np.array([s[0] for s in samples])
    seen = np.array([s[1] for s in samples], dtype="float64")
    lo, hi = np.searchsorted(seen, 0.1 * n), np.searchsorted(seen, 0.9 * n)
    if hi >= len(seen) or hi <= lo or t[hi] <= t[lo]:
        return None
    return round((seen[hi] - seen[lo]) / (t[hi] - t[lo]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--river-events", type=int, default=200_000)
    parser.add_argument("--sgd-events", type=int, default=1_000_000)
    parser.add_argument("--publish", type=float, default=0.2, help="publish every (seconds)")
    parser.add_argument("--paced-rate", type=float, default=10_000.0)
    parser.add_argument("--quick", action="store_true", help="small runs, a smoke test")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.river_events, args.sgd_events = 20_000, 100_000

    data = clicks(max(args.river_events, args.sgd_events))
    river_df = data.iloc[:args.river_events].reset_index(drop=True)
    rows = [river_baseline(river_df), in_process(river_df, 1000)]
    for r in rows:
        print(f"  {r['pipeline']:<28} {r['events_per_s']:>10,} events/s  "
              f"accuracy {r['accuracy']}", flush=True)
    fk.connect()
    for learner, df in (("river", river_df), ("sgd", data.iloc[:args.sgd_events])):
        for bs in args.sizes:
            rows.append(train_stage(df, learner, bs, args.publish))
            r = rows[-1]
            print(f"  {r['pipeline']:<28} {learner:<5} batch {bs:>5} {r['events_per_s']:>10,} "
                  f"events/s (steady {r['steady_per_s']})  publish p50 {r['publish_p50_ms']} "
                  f"p99 {r['publish_p99_ms']} ms", flush=True)
    paced_n = int(min(args.paced_rate * (5 if args.quick else 15), len(river_df)))
    rows.append(train_stage(river_df.iloc[:paced_n], "river", 1000, args.publish,
                            rate=args.paced_rate))
    r = rows[-1]
    print(f"  {r['pipeline']:<28} river batch  1000 publish p50 {r['publish_p50_ms']} "
          f"p99 {r['publish_p99_ms']} ms", flush=True)
    fk.shutdown()

    baseline = rows[0]["events_per_s"]
    for r in rows:
        r["vs_river"] = round(r["events_per_s"] / baseline, 2)
    stage = [r for r in rows if r["pipeline"] == "train stage"]
    river_met = {r["batch_size"]: r["events_per_s"] >= baseline
                 for r in stage if r["learner"] == "river"}
    sgd_big = [r["events_per_s"] for r in stage if r["learner"] == "sgd" and r["batch_size"] >= 1000]
    result = {
        "benchmark": "train_throughput",
        "machine": machine(),
        "settings": {"sizes": args.sizes, "river_events": args.river_events,
                     "sgd_events": args.sgd_events, "publish_every_s": args.publish,
                     "paced_rate": args.paced_rate, "features": FEATURES,
                     "river_model": "StandardScaler | LogisticRegression",
                     "sgd_model": "SGDClassifier(loss='log_loss', learning_rate='constant', "
                                  "eta0=0.01), classes=[0, 1]",
                     "source": "replay of a pre-generated DataFrame, rate=None"},
        "targets": {
            "river_at_least_progressive_val_score": {"baseline_events_per_s": baseline,
                                                     "met_at_batch_size": river_met},
            "vectorized_events_per_s": {"target": TARGET_VECTORIZED, "at_batch_size": ">= 1000",
                                        "best": max(sgd_big) if sgd_big else None,
                                        "met": bool(sgd_big) and max(sgd_big) >= TARGET_VECTORIZED},
        },
        "results": rows,
    }
    print()
    print(table(rows, ["pipeline", "learner", "batch_size", "events_per_s", "steady_per_s",
                       "vs_river", "accuracy", "publish_p50_ms", "publish_p99_ms",
                       "train_p50_ms", "train_p99_ms"]))
    print(f"\ntargets: {result['targets']}  (load average {result['machine']['load_avg_1m']})")
    path = write_result(args.out or ("train_throughput_quick" if args.quick else
                                     "train_throughput"), result)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
