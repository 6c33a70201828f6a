"""Recovery time per actor kind, and what checkpointing costs in throughput.

Kills each kind of actor (fused stream, parallel source, parallel operator, trainer,
registry, the controller itself) mid-run with SIGKILL, several times, and reads the
controller's recovery record (from the restarted process reporting back to the pipeline
running again from the last checkpoint), and the time from the kill itself to the same
moment (which adds Ray's restart of the process); for the registry, from the kill to the
next version published; for the controller, from the kill to the restarted controller
running the pipeline. Then
runs the same stream -> train pipeline as fast as it goes with checkpoints every 1 s, 5 s
and 30 s, and without, in the same run.

    python benchmarks/recovery.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, summary_ms, table, write_result  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.training.protocol import Prediction  # noqa: E402


class Counter:
    """A cheap learner (the benchmark measures the runtime, not a model)."""

    task = "classification"

    def __init__(self):
        self.n = 0

    def predict(self, X):
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X, y):
        self.n += len(X)

    def get_state(self):
        return pickle.dumps(self.n)

    def set_state(self, state):
        self.n = pickle.loads(state)


def wait(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def learned(name="count") -> int:
    return fk.infos(name)[0].get("events_seen", 0)


def kill_once(kind: str, seed: int) -> float:
    parallel = kind in ("source", "ops")
    src = fk.sources.synthetic("clicks", rate=20_000, seed=seed)
    fk.stream("clicks", source=src, batch_size=500, parallelism=2 if parallel else 1,
              key_by="user_id" if parallel else None)
    fk.train("count", on="clicks", label="clicked", model=Counter(), publish_every="500ms")
    wait(lambda: learned() > 20_000)
    assert fk.checkpoint() is not None
    before = len(fk.recoveries())
    if kind == "controller":  # from SIGKILL to the restarted controller running the pipeline
        pid = fk.controller_info().pid
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        fk.controller_info()  # waits through the restart
        wait(lambda: len(fk.recoveries()) > before)
        seconds = time.time() - t0
        n = learned()
        wait(lambda: learned() > n + 10_000)
    elif kind == "registry":
        import ray

        reg = fk.api.handles()["registry"]
        pid = ray.get(reg.pid.remote())
        t0 = time.time()
        os.kill(pid, signal.SIGKILL)
        v0 = fk.live_version("count")
        wait(lambda: (fk.live_version("count") or 0) > v0)
        seconds = time.time() - t0
    else:
        stage = "count" if kind == "train" else "clicks"
        info = next(i for i in fk.infos(stage) if i.get("role", "train") == kind)
        t0 = time.time()
        os.kill(info["pid"], signal.SIGKILL)
        wait(lambda: len(fk.recoveries()) > before)
        rec = fk.recoveries().iloc[-1]
        n = learned()
        wait(lambda: learned() > n + 10_000)  # and it learns again
        fk.stop()
        return float(rec["seconds"]), float(rec["recovered"]) - t0
    fk.stop()
    return seconds, seconds


def throughput(seconds: float, every: float | None) -> float:
    """Events/s of stream -> train as fast as it goes, with a checkpoint every ``every``
    seconds (taken from here, as the controller's own timer would) or none."""
    import threading

    src = fk.sources.synthetic("clicks", rate=None, seed=1)
    fk.stream("clicks", source=src, batch_size=2000, paused=True)
    fk.train("count", on="clicks", label="clicked", model=Counter(), publish_every="1s")
    fk.resume("clicks")
    time.sleep(2.0)
    done = threading.Event()

    def checkpoints() -> None:
        while every is not None and not done.wait(every):
            fk.checkpoint()

    ticker = threading.Thread(target=checkpoints, daemon=True)
    ticker.start()
    n0, t0 = learned(), time.monotonic()
    time.sleep(seconds)
    rate = (learned() - n0) / (time.monotonic() - t0)
    done.set()
    ticker.join()
    fk.stop()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter runs")
    parser.add_argument("--cost-only", action="store_true",
                        help="measure the checkpoint cost only; keep the recovery times of the "
                             "last results file")
    args = parser.parse_args()
    reps = 2 if args.quick else 5
    run_s = 8.0 if args.quick else 20.0

    rows = []
    if args.cost_only:
        import json

        rows = json.loads((Path(__file__).parent / "results" / "recovery.json")
                          .read_text())["recovery"]
    else:
        fk.connect(checkpoint_every=None)
        for kind in ("fused", "source", "ops", "train", "registry", "controller"):
            times = [kill_once(kind, seed) for seed in range(reps)]
            from_kill = summary_ms([t[1] for t in times])
            rows.append({"actor": kind, **summary_ms([t[0] for t in times]),
                         "from_kill_p50_ms": from_kill["p50_ms"],
                         "from_kill_max_ms": from_kill["max_ms"]})
            print(f"recovery {kind}: {rows[-1]}", flush=True)
        fk.shutdown()

    # one Ray for every setting, in rounds that alternate the order, median per setting
    fk.connect(checkpoint_every=None)
    settings = (None, 30.0, 5.0, 1.0)
    rates: dict = {every: [] for every in settings}
    for r in range(3 if args.quick else 5):
        for every in (settings if r % 2 == 0 else settings[::-1]):
            rates[every].append(throughput(run_s, every))
            print(f"throughput with checkpoints every {every}: {rates[every][-1]:,.0f} "
                  f"events/s", flush=True)
    fk.shutdown()
    cost = [{"checkpoint_every_s": every or "off", "events_per_s": round(float(np.median(v))),
             "runs": [round(x) for x in v]} for every, v in rates.items()]
    base = cost[0]["events_per_s"]
    for row in cost:
        row["cost_pct"] = round(100.0 * (1 - row["events_per_s"] / base), 1)

    print()
    print(table(rows, ["actor", "n", "p50_ms", "p99_ms", "max_ms", "from_kill_p50_ms",
                       "from_kill_max_ms"]))
    print()
    print(table(cost, ["checkpoint_every_s", "events_per_s", "cost_pct"]))
    path = write_result("recovery", {"machine": machine(), "recovery": rows, "checkpoint_cost": cost,
                                     "quick": args.quick})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
