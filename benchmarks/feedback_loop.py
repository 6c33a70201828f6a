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

Run ``python benchmarks/feedback_loop.py`` (about a minute) or ``--quick``. Prints a table
and writes benchmarks/results/feedback_loop.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table, wait_for_warm_hosts, write_result  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.streaming.join import IntervalJoin  # noqa: E402
from fusionkit.training.protocol import Learner, Prediction  # noqa: E402

WITHIN = 30.0
TARGET_EVENTS_S = 150_000
TARGET_VS_PANDAS = 0.5


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=500_000, help="impressions (default 500k)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--quick", action="store_true", help="100k impressions")
    args = ap.parse_args()
    n = 100_000 if args.quick else args.events
    imp, out = data(n)
    rows: list[dict[str, Any]] = []

    t0 = time.perf_counter()
    expected = pandas_join(imp, out)
    pandas_s = time.perf_counter() - t0
    positives = int(expected["clicked"].sum())
    rows.append({"way": "pandas, one process", "left_events_per_s": n / pandas_s,
                 "seconds": pandas_s, "positives": positives})

    got, join_s = interval_join(in_order(imp, out, args.batch), args.batch)
    labels = got.set_index("request_id")["clicked"].reindex(expected["request_id"])
    if len(got) != n or not (labels.to_numpy() == expected["clicked"].to_numpy()).all():
        raise SystemExit("IntervalJoin's labels differ from the pandas join's")
    rows.append({"way": f"IntervalJoin, one process, batch {args.batch}",
                 "left_events_per_s": n / join_s, "seconds": join_s,
                 "positives": int(got["clicked"].sum())})

    fk.connect()
    try:
        for parallelism in (1, 2):
            r = join_stage(imp, out, args.batch, parallelism)
            if r["joined"] != positives:
                raise SystemExit(f"the join stage found {r['joined']} positives, pandas "
                                 f"{positives}")
            rows.append({"way": f"join stage, {parallelism} actor(s), batch {args.batch}",
                         "left_events_per_s": n / r["elapsed_s"], "seconds": r["elapsed_s"],
                         "positives": r["joined"]})
    finally:
        fk.shutdown()

    stage = rows[2]["left_events_per_s"]
    ratio = stage / rows[0]["left_events_per_s"]
    print(f"\n{n:,} impressions, {len(out):,} outcomes, {positives:,} positives\n")
    print(table(rows, ["way", "left_events_per_s", "seconds", "positives"]))
    print(f"\njoin stage (1 actor) / pandas: {ratio:.2f}x (target >= {TARGET_VS_PANDAS}); "
          f"{stage:,.0f} left events/s (target >= {TARGET_EVENTS_S:,})")
    path = write_result("feedback_loop", {
        "machine": machine(), "events": n, "outcomes": len(out), "batch": args.batch,
        "rows": rows, "stage_vs_pandas": ratio,
        "targets": {"stage_left_events_per_s": TARGET_EVENTS_S,
                    "stage_vs_pandas": TARGET_VS_PANDAS},
        "met": {"stage_left_events_per_s": stage >= TARGET_EVENTS_S,
                "stage_vs_pandas": ratio >= TARGET_VS_PANDAS}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
