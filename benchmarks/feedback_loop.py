"""Join throughput: impressions labelled by their delayed clicks, three ways, same data, same run.

``fk.sources.synthetic_feedback`` (seed 0, delays exponential with mean 5 s, 2% after the
30 s window) gives ``--events`` impressions and their outcomes, generated once in this
process. Every row of the table joins exactly those rows into examples (an impression
with a click within 30 s is a positive, the others negatives):

- ``pandas, one process``: the whole data at once: ``merge`` on ``request_id``, the interval
  filter, the first click per impression, the label column; the baseline a data scientist
  would write for a batch job.
- ``IntervalJoin, one process``: fusionkit's join (``streaming/join.py``) fed batches of
  ``--batch`` rows of each input in event-time order, as its actor is: the join's own cost.
- ``join stage, N actors``: ``fk.sources.replay`` of both frames (as fast as taken) ->
  two ``fk.stream`` stages -> ``fk.join(parallelism=N)`` -> ``fk.train`` with a learner that
  only counts: from the moment the streams start reading (the train stage is defined) to
  the last example learned, on Ray, with its checkpoints and bounded hand-offs.

Every way must give the same labels (checked: the run fails otherwise). Figures are left
events (impressions) per second. Targets (issue 20): the join stage on one actor >= 150k
left events/s at batch 1000, and >= 0.5x the pandas join in the same run.

Loop freshness (``--loop``; both parts run without ``--loop`` or ``--join``): the whole loop
at ``--rate`` impressions/s (5k), live (outcomes come when the wall clock reaches their
time), the same data as above (delays mean 5 s, ``within`` 30 s), the demo's River model
(``fusionkit.demo.ctr_model``) learned per example (``--model numeric``: the cheaper model
``freshness.py`` uses at 20k events/s, per micro-batch), one single-row HTTP request every
10 ms:

- ``fusionkit``: ``fk.stream`` of the impressions and of the outcomes -> ``fk.join`` ->
  ``fk.train`` (publishes every 25 ms, as in ``benchmarks/freshness.py``) -> ``fk.serve``;
  freshness as ``fk.freshness`` reports it: from the moment the join completed an example
  (its click came, or its window closed) to the first answer by a version that learned it.
- ``stitched common`` / ``stitched aggressive`` (``benchmarks/stitched_loop.py``): a feed
  process writing both streams to Redis (a real ``redis-server``), a joiner process reading
  them with ``XREAD`` and joining them with the same ``IntervalJoin`` (same ``within``,
  label, default, idle), writing the examples to a Redis stream, stamped with the time it
  completed them; ``benchmarks/stitched.py``'s trainer (saves the model file every P s) and
  HTTP server (polls it every Q s), common (P = 1 s, Q = 100 ms) and aggressive (P = 100
  ms, Q = 20 ms) as in the freshness benchmark. Freshness from the trainer's per-version
  completion times and the server's first-answer times, computed by ``freshness.py``'s
  ``stitched_freshness``.

Only examples first answered in the measured window count; the warm-up (35 s by default)
lasts past the first ``within`` so that timed-out negatives (three quarters of the
examples) flow as well as clicks. Targets (issue 20): fusionkit p99 <= 150 ms after
completion, and >= 5x lower than the stitched common setting (p99) in the same run.

Run ``python benchmarks/feedback_loop.py`` (about 5 minutes: ``--join`` about a minute,
``--loop`` about 4) or ``--quick``. Prints tables and writes
benchmarks/results/feedback_loop.json (join throughput) and feedback_loop_freshness.json
(loop freshness).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import freshness  # noqa: E402
from _common import free_port, machine, table, wait_for_warm_hosts, write_result  # noqa: E402
from freshness import STITCHED, Load, quantiles, start_redis, stitched_freshness  # noqa: E402
from stitched import make_model  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.streaming.join import IntervalJoin  # noqa: E402
from fusionkit.training.protocol import Learner, Prediction  # noqa: E402

WITHIN = 30.0
TARGET_EVENTS_S = 150_000
TARGET_VS_PANDAS = 0.5
HERE = Path(__file__).parent
TARGET_LOOP_P99_MS = 150
TARGET_LOOP_VS_STITCHED = 5
MODEL_TEXT = {"ctr": "ctr (fusionkit.demo.ctr_model), learned per example",
              "numeric": "numeric (stitched.make_model), learned per micro-batch"}
KEPT_UP = 0.9  # a pipeline keeps up when it completes >= 90% of the rate in examples/s


def data(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` impressions and their outcomes, with event times, read in full."""
    ads, clicks = fk.sources.synthetic_feedback("ads", rate=None, seed=0, max_events=n,
                                                start_time=0.0, delay="5s",
                                                late_fraction=0.02, horizon=f"{WITHIN}s")
    imp, out = read_all(ads), read_all(clicks)
    return imp.drop(columns=["_ingest_ts"], errors="ignore"), \
        out.drop(columns=["_ingest_ts"], errors="ignore")


def read_all(source: Any) -> pd.DataFrame:
    parts = []
    while (b := source.read(50_000)) is not None and len(b):
        parts.append(b)
    return pd.concat(parts, ignore_index=True)


def pandas_join(imp: pd.DataFrame, out: pd.DataFrame) -> pd.DataFrame:
    """The batch job: every impression with ``clicked`` 1 if an outcome came within the
    window (the first one), else 0."""
    m = imp[["request_id", "_event_time"]].merge(
        out[["request_id", "_event_time"]], on="request_id", suffixes=("", "_o"))
    hit = m[(m["_event_time"] <= m["_event_time_o"])
            & (m["_event_time_o"] <= m["_event_time"] + WITHIN)]
    first = hit.drop_duplicates("request_id")
    clicked = imp["request_id"].isin(first["request_id"]).astype("int64")
    return imp.assign(clicked=clicked.to_numpy())


def in_order(imp: pd.DataFrame, out: pd.DataFrame, batch: int):
    """Batches of each input as a join actor would get them: by event time, ``batch`` rows."""
    cuts = [("left", imp.iloc[i:i + batch]) for i in range(0, len(imp), batch)]
    cuts += [("right", out.iloc[i:i + batch]) for i in range(0, len(out), batch)]
    cuts.sort(key=lambda c: float(c[1]["_event_time"].iloc[-1]))
    return cuts


def interval_join(cuts, batch: int) -> tuple[pd.DataFrame, float]:
    j = IntervalJoin(on="request_id", within=WITHIN, label="clicked", default=0, idle=None)
    outs = []
    t0 = time.perf_counter()
    for side, b in cuts:
        outs.append(j.process_left(b, now=0.0) if side == "left" else j.process_right(b, now=0.0))
        j.side_outputs()
    outs.append(j.flush())
    elapsed = time.perf_counter() - t0
    return pd.concat(outs, ignore_index=True), elapsed


class Counter(Learner):
    """Learns nothing; keeps how many examples, and how many positives, it was given."""

    task = "classification"

    def __init__(self):
        self.n = 0
        self.positives = 0

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self.n += len(X)
        self.positives += int(y.sum())

    def get_state(self) -> tuple[int, int]:
        return self.n, self.positives

    def set_state(self, state: tuple[int, int]) -> None:
        self.n, self.positives = state


def join_stage(imp: pd.DataFrame, out: pd.DataFrame, batch: int, parallelism: int
               ) -> dict[str, Any]:
    """The join as a stage on Ray: examples/s from the start of reading to the last learned."""
    fk.stream("impressions", source=fk.sources.replay(imp, time_column="_event_time"),
              batch_size=batch)
    fk.stream("clicks", source=fk.sources.replay(out, time_column="_event_time"),
              batch_size=batch)
    fk.join("examples", left="impressions", right="clicks", on="request_id", within=WITHIN,
            label="clicked", default=0, idle=None, parallelism=parallelism)
    wait_for_warm_hosts()
    t0 = time.perf_counter()
    fk.train("count", on="examples", label="clicked", model=Counter(), publish_every=None)
    n = len(imp)
    deadline = time.monotonic() + 600
    while True:
        seen = int(fk.infos("count")[0].get("events_seen", 0))
        if seen >= n:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {n} examples learned in 600 s")
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    infos = fk.infos("examples")
    joined = sum(i["joined"] for i in infos)
    fk.stop()
    return {"elapsed_s": elapsed, "joined": joined}


def run_join_part(n: int, batch: int) -> None:
    """The join throughput table (three ways, same data): feedback_loop.json."""
    imp, out = data(n)
    rows: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    expected = pandas_join(imp, out)
    pandas_s = time.perf_counter() - t0
    positives = int(expected["clicked"].sum())
    rows.append({"way": "pandas, one process", "left_events_per_s": n / pandas_s,
                 "seconds": pandas_s, "positives": positives})

    got, join_s = interval_join(in_order(imp, out, batch), batch)
    labels = got.set_index("request_id")["clicked"].reindex(expected["request_id"])
    if len(got) != n or not (labels.to_numpy() == expected["clicked"].to_numpy()).all():
        raise SystemExit("IntervalJoin's labels differ from the pandas join's")
    rows.append({"way": f"IntervalJoin, one process, batch {batch}",
                 "left_events_per_s": n / join_s, "seconds": join_s,
                 "positives": int(got["clicked"].sum())})

    for parallelism in (1, 2):
        r = join_stage(imp, out, batch, parallelism)
        if r["joined"] != positives:
            raise SystemExit(f"the join stage found {r['joined']} positives, pandas "
                             f"{positives}")
        rows.append({"way": f"join stage, {parallelism} actor(s), batch {batch}",
                     "left_events_per_s": n / r["elapsed_s"], "seconds": r["elapsed_s"],
                     "positives": r["joined"]})

    stage = rows[2]["left_events_per_s"]
    ratio = stage / rows[0]["left_events_per_s"]
    print(f"\n{n:,} impressions, {len(out):,} outcomes, {positives:,} positives\n")
    print(table(rows, ["way", "left_events_per_s", "seconds", "positives"]))
    print(f"\njoin stage (1 actor) / pandas: {ratio:.2f}x (target >= {TARGET_VS_PANDAS}); "
          f"{stage:,.0f} left events/s (target >= {TARGET_EVENTS_S:,})")
    path = write_result("feedback_loop", {
        "machine": machine(), "events": n, "outcomes": len(out), "batch": batch,
        "rows": rows, "stage_vs_pandas": ratio,
        "targets": {"stage_left_events_per_s": TARGET_EVENTS_S,
                    "stage_vs_pandas": TARGET_VS_PANDAS},
        "met": {"stage_left_events_per_s": stage >= TARGET_EVENTS_S,
                "stage_vs_pandas": ratio >= TARGET_VS_PANDAS}})
    print(f"wrote {path}")


# -- loop freshness ----------------------------------------------------------------------
def loop_fusionkit(args: argparse.Namespace, port: int) -> dict[str, Any]:
    """impressions + clicks -> fk.join -> fk.train -> fk.serve; fk.freshness of the train
    stage (completion of an example -> first answer by a version that learned it)."""
    name = f"loop-{args.model}-{int(time.time())}"
    ads, clicks = fk.sources.synthetic_feedback("ads", rate=args.rate, seed=args.seed,
                                                delay=f"{args.delay}s", late_fraction=0.02,
                                                horizon=f"{args.within}s")
    fk.stream("impressions", source=ads, batch_size=args.batch_size, linger=args.linger)
    fk.stream("clicks", source=clicks, batch_size=args.batch_size, linger=args.linger)
    fk.join("examples", left="impressions", right="clicks", on="request_id",
            within=args.within, label="clicked", default=0, idle=args.idle)
    fk.train(name, on="examples", label="clicked", model=make_model(args.model),
             publish_every=args.fk_publish, mini_batch=args.model == "numeric")
    fk.serve("loop-api", model=name, port=port)
    wait_for_warm_hosts()
    lag_before = freshness._settle("impressions")
    load = Load(f"http://127.0.0.1:{port}/loop-api", freshness._feature_row(), args.request_every)
    load.start()
    time.sleep(args.warmup)
    t0, seen0, done0 = time.time(), _seen(name), _completed()
    time.sleep(args.duration)
    t1, seen1, done1 = time.time(), _seen(name), _completed()
    lag_after = freshness._settle("impressions", timeout=0)
    counts = load.stop()
    fresh = fk.freshness(name, since=t0)
    published = fk.freshness(name, publish=True, since=t0)
    versions = fk.models(name)
    window = versions[(versions["created"] > t0) & (versions["created"] <= t1)]
    join = {k: sum(int(i.get(k, 0)) for i in fk.infos("examples"))
            for k in ("lefts", "joined", "timed_out", "late", "orphans", "pending")}
    fk.stop()
    return {"pipeline": "fusionkit", "publish_s": args.fk_publish, "poll_s": 0.0,
            **{k: fresh[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
            "to_publish_p50_ms": published["p50_ms"], "to_publish_p99_ms": published["p99_ms"],
            "examples": int(fresh["events"]), "completed_per_s": (done1 - done0) / (t1 - t0),
            "learned_per_s": (seen1 - seen0) / (t1 - t0), "versions": len(window), "join": join,
            "source_lag_s": [round(lag_before, 3), round(lag_after, 3)], **counts}


def _seen(name: str) -> int:
    return int(fk.infos(name)[0].get("events_seen", 0))


def _completed() -> int:
    """Examples the join stage has completed (clicked or timed out) so far."""
    return sum(int(i.get("joined", 0)) + int(i.get("timed_out", 0))
               for i in fk.infos("examples"))


def _spawn(script: str, *argv: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / script), *map(str, argv)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def loop_stitched(setting: str, args: argparse.Namespace, redis_port: int) -> dict[str, Any]:
    """feed -> Redis -> joiner -> Redis -> trainer -> model file -> polling HTTP server."""
    import json

    import redis

    publish, poll = STITCHED[setting]
    redis.Redis(port=redis_port).delete("impressions", "outcomes", "examples")
    folder = Path(tempfile.mkdtemp(prefix="fk-stitched-loop-"))
    port = free_port()
    serve = _spawn("stitched.py", "serve", "--folder", folder, "--port", port, "--poll", poll)
    train = _spawn("stitched.py", "train", "--redis", redis_port, "--folder", folder,
                   "--publish", publish, "--model", args.model, "--key", "examples",
                   *(["--mini-batch"] if args.model == "numeric" else []))
    join = _spawn("stitched_loop.py", "join", "--redis", redis_port, "--folder", folder,
                  "--within", args.within,
                  *(["--idle", args.idle] if args.idle is not None else []))
    time.sleep(1.0)  # the trainer reads from the stream's end: let it start reading first
    feed = _spawn("stitched_loop.py", "feed", "--redis", redis_port, "--rate", args.rate,
                  "--seed", args.seed, "--within", args.within, "--delay", args.delay,
                  "--batch-size", args.batch_size, "--linger", args.linger)
    url = f"http://127.0.0.1:{port}/predict"
    procs = [feed, join, train]
    try:
        t0, t1, counts, served = freshness.measure_stitched(url, [serve, *procs], args)
    finally:
        for p in procs:  # upstream first: each writes what it has when stopped
            p.terminate()
            p.wait(timeout=30)
        serve.terminate()
        serve.wait(timeout=30)
    versions = pickle.loads((folder / "versions.pkl").read_bytes())
    joined = json.loads((folder / "join.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    fresh, learned, n_versions = stitched_freshness(versions, served, t0, t1)
    # examples the joiner completed in the window (all of them learned by the end)
    completed = sum(int(((v > t0) & (v <= t1)).sum()) for v in versions.values())
    return {"pipeline": f"stitched {setting}", "publish_s": publish, "poll_s": poll,
            **quantiles(fresh), "examples": int(fresh.size),
            "completed_per_s": completed / (t1 - t0),
            "learned_per_s": learned / (t1 - t0), "versions": n_versions,
            "join": {k: joined.get(k, 0) for k in ("lefts", "joined", "timed_out", "late",
                                                    "orphans", "read_behind_p50_s",
                                                    "read_behind_p99_s")},
            **counts}


LOOP_COLUMNS = ["pipeline", "publish_s", "poll_s", "p50_ms", "p95_ms", "p99_ms",
                "to_publish_p50_ms", "to_publish_p99_ms", "examples", "completed_per_s",
                "learned_per_s", "versions", "requests_ok", "requests_failed"]


def loop_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["pipeline"]: r for r in rows}
    fused = by["fusionkit"]
    out: dict[str, Any] = {"fusionkit_p50_ms": round(fused["p50_ms"], 1),
                           "fusionkit_p99_ms": round(fused["p99_ms"], 1),
                           "p99_le_150ms": bool(fused["p99_ms"] <= TARGET_LOOP_P99_MS)}
    for setting in STITCHED:
        other = by.get(f"stitched {setting}")
        if other is None:
            continue
        out[f"x_lower_than_{setting}_p50"] = round(other["p50_ms"] / fused["p50_ms"], 2)
        out[f"x_lower_than_{setting}_p99"] = round(other["p99_ms"] / fused["p99_ms"], 2)
    if "x_lower_than_common_p99" in out:
        out["ge_5x_lower_than_common_p99"] = bool(
            out["x_lower_than_common_p99"] >= TARGET_LOOP_VS_STITCHED)
    return out


def run_loop_part(args: argparse.Namespace) -> None:
    """Loop freshness, fusionkit and the stitched baseline in one run: feedback_loop_freshness.json."""
    from fusionkit.serving.deploy import start

    load_before = round(os.getloadavg()[0], 2)
    port = free_port()
    start("127.0.0.1", port)  # Ray Serve's proxy up before any timed run
    redis_proc, redis_port = start_redis()
    rows: list[dict[str, Any]] = []
    try:
        rows.append(loop_fusionkit(args, port))
        print(table(rows[-1:], LOOP_COLUMNS), flush=True)
        if not args.skip_stitched:
            for setting in STITCHED:
                rows.append(loop_stitched(setting, args, redis_port))
                print(table(rows[-1:], LOOP_COLUMNS), flush=True)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    print(f"\nLoop freshness at {args.rate:,} impressions/s: an example's completion -> the "
          "first answer by a version that learned it (ms)")
    print(table(rows, LOOP_COLUMNS))
    for r in rows:
        r["kept_up"] = bool(r["completed_per_s"] >= KEPT_UP * args.rate)
        print(f"  {r['pipeline']}: join {r['join']}"
              + ("" if r["kept_up"] else f"; did NOT keep up with {args.rate:,} examples/s "
                 f"(completed {r['completed_per_s']:,.0f}/s in the window): its figures "
                 "are for a lighter load"))
    targets = loop_targets(rows)
    common = targets.get("ge_5x_lower_than_common_p99")
    print(f"Targets: fusionkit p99 {targets['fusionkit_p99_ms']} ms <= {TARGET_LOOP_P99_MS} ms: "
          f"{'PASS' if targets['p99_le_150ms'] else 'FAIL'}; "
          + (f"{targets['x_lower_than_common_p99']}x lower p99 than stitched common "
             f"(>= {TARGET_LOOP_VS_STITCHED}x): {'PASS' if common else 'FAIL'}; "
             f"vs stitched aggressive {targets.get('x_lower_than_aggressive_p99')}x "
             "(no target)" if common is not None else "stitched not run"))
    config = {k: v for k, v in vars(args).items()}
    path = write_result(args.out or ("feedback_loop_freshness_quick" if args.quick
                                     else "feedback_loop_freshness"), {
        "benchmark": "feedback_loop --loop", "quick": args.quick, "machine": machine(),
        "load_avg_1m_before": load_before,
        "config": config, "model": MODEL_TEXT[args.model],
        "results": rows,
        "targets": {"fusionkit_p99_ms": TARGET_LOOP_P99_MS,
                    "x_lower_than_common_p99": TARGET_LOOP_VS_STITCHED},
        "met": targets})
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--join", action="store_true", help="only the join throughput part")
    ap.add_argument("--loop", action="store_true", help="only the loop freshness part")
    ap.add_argument("--quick", action="store_true",
                    help="100k impressions; a short loop (within 5 s, warm-up 12 s, 8 s "
                         "measured)")
    ap.add_argument("--events", type=int, default=500_000, help="impressions (default 500k)")
    ap.add_argument("--batch", type=int, default=1000, help="join part's batch size")
    loop = ap.add_argument_group("loop freshness")
    loop.add_argument("--rate", type=int, default=5000, help="impressions/s (default 5000)")
    loop.add_argument("--seed", type=int, default=3)
    loop.add_argument("--within", type=float, default=None,
                      help="the join's window, s (default 30; 5 with --quick)")
    loop.add_argument("--delay", type=float, default=None,
                      help="mean click delay, s (default 5; 1 with --quick)")
    loop.add_argument("--idle", type=float, default=5.0, help="the join's idle, s")
    loop.add_argument("--batch-size", type=int, default=500, help="stream micro-batches")
    loop.add_argument("--linger", type=float, default=0.01)
    loop.add_argument("--model", choices=sorted(MODEL_TEXT), default="ctr",
                      help="what both pipelines learn (default ctr)")
    loop.add_argument("--fk-publish", type=float, default=0.025, help="train publish every")
    loop.add_argument("--request-every", type=float, default=0.01)
    loop.add_argument("--warmup", type=float, default=None,
                      help="seconds (default within + 5: past the first timeouts)")
    loop.add_argument("--duration", type=float, default=None, help="seconds (default 20)")
    loop.add_argument("--skip-stitched", action="store_true")
    loop.add_argument("--out", default=None, help="loop result name")
    args = ap.parse_args()
    args.within = args.within or (5.0 if args.quick else WITHIN)
    args.delay = args.delay or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup or (12.0 if args.quick else args.within + 5.0)
    args.duration = args.duration or (8.0 if args.quick else 20.0)
    both = not (args.join or args.loop)

    fk.connect()
    try:
        if args.join or both:
            run_join_part(100_000 if args.quick else args.events, args.batch)
        if args.loop or both:
            run_loop_part(args)
    finally:
        fk.shutdown()


if __name__ == "__main__":
    main()
