"""Drift detection benchmark: how well and how cheaply fusionkit's drift monitors work.

Three parts, one run:

1. Concept drift. Streams with known change points: River's SEA (10% label noise) and
   Agrawal generators joined by ``ConceptDriftStream`` (abrupt: width 50; gradual: width
   2000), learned prequentially by a ``HoeffdingTreeClassifier``, plus a synthetic 0/1
   error stream (a warm-up from 40% down to 10% error, then a rise to 15% at event 10,000).
   On each stream's error stream, over 20 seeds: River's ``ADWIN`` alone (every detection
   counted), fusionkit's ADWIN with its direction check only, and fusionkit's default
   ``ConceptDriftMonitor`` (direction-checked ADWIN plus the windowed error-rate test).
   A drift counts as detected by the first alarm from the start of the transition
   (``position - width / 2``) to 1000 events after its end; the delay is measured from
   the start of the transition. Any other alarm is a false alarm.
2. Feature drift. The false-alarm rate per window per feature of ``FeatureDriftMonitor``
   on stationary data (normal, lognormal, integer and categorical features and a float
   prediction), with the defaults and with a 200-event window; and how often a mean shift
   is flagged in the first window after it.
3. Cost. Events/s of a prequential train loop over 500-event batches (River
   ``StandardScaler | LogisticRegression`` and ``HoeffdingTreeClassifier``), with and
   without a ``DriftMonitor`` fed every batch: runs alternate, best of ``--repeats`` each;
   also the monitor's share of the training time within the same runs.
4. Stage cost (``--stage``, starts a local Ray): what the issue's target is about, the
   train stage's own throughput with and without ``fk.watch_drift`` (its defaults: every
   feature of the model, predictions, ADWIN), on benchmarks/train_throughput.py's replayed
   click stream and River model at batch 1000; runs alternate, ``--stage-repeats`` pairs.

5. A learning model on a stationary stream (``--only stationary``, no Ray): 20 seeds of
   60,000 synthetic click events with no drift, learned by River ``StandardScaler |
   LogisticRegression`` event by event (the README's model) and once per batch
   (``mini_batch=True``, slow to settle), and by the tutorial's one-hot pipeline; each fed
   batch by batch to two ``DriftWatch`` es with ``fk.watch_drift``'s defaults, as the train
   stage feeds them: "before" watches the stage's own predictions against the first
   10,000 (the comparison fusionkit made before), "after" scores samples of the
   reference's and each window's inputs with the model as it is at the test. False alarms
   of every kind per 100k events, and the watches' time per event. Then a real feature
   shift (price or dwell up by one standard deviation at event 25,000 of 40,000): how often
   and how late the feature alarm and the prediction alarm come, before and after.

Run ``python benchmarks/drift_detection.py`` (about 8 minutes on 2 cores, half of it part 5)
or with ``--quick`` for a smoke run; ``--only stage`` (or ``concept``, ``features``,
``cost``, ``stationary``) runs one part and merges it into the results file. Prints tables
and writes benchmarks/results/drift_detection.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from river import drift as river_drift
from river import linear_model, preprocessing, tree
from river.datasets import synth

from fusionkit.drift_detection.concept import ConceptDriftMonitor
from fusionkit.drift_detection.feature import FeatureDriftMonitor
from fusionkit.drift_detection.monitor import DriftMonitor
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.drift_detection.watch import DriftWatch
from fusionkit.sources.drift import FeatureDrift
from fusionkit.sources.synthetic import Synthetic
from fusionkit.training.learners import adapt
from fusionkit.training.prequential import Prequential

RESULTS = Path(__file__).parent / "results" / "drift_detection.json"
MAX_DELAY = 1000  # events after the end of a transition for an alarm to count as a detection
BATCH = 500

STREAMS = {
    "sea_abrupt": {"gen": "sea", "before": 0, "after": 3, "position": 8000, "width": 50,
                   "n": 16000},
    "sea_gradual": {"gen": "sea", "before": 0, "after": 3, "position": 8000, "width": 2000,
                    "n": 16000},
    "agrawal_abrupt": {"gen": "agrawal", "before": 0, "after": 2, "position": 6000,
                       "width": 50, "n": 12000},
    "agrawal_gradual": {"gen": "agrawal", "before": 0, "after": 1, "position": 6000,
                        "width": 2000, "n": 12000},
    "error_rate_5pt": {"gen": "errors", "position": 10000, "width": 1, "n": 20000},
}  # fmt: skip
WATCHED = ["amount", "score", "hour", "country"]
DETECTORS = ("river_adwin", "fusionkit_adwin_direction", "fusionkit_default")


def _generator(gen: str, variant: int, seed: int):
    if gen == "sea":
        return synth.SEA(variant=variant, noise=0.1, seed=seed)
    return synth.Agrawal(classification_function=variant, seed=seed)


def error_stream(name: str, seed: int) -> np.ndarray:
    """The prequential 0/1 error stream of one stream and seed."""
    spec = STREAMS[name]
    n, position = spec["n"], spec["position"]
    if spec["gen"] == "errors":
        t = np.arange(n)
        rate = 0.10 + 0.30 * np.exp(-t / 500.0) + np.where(t >= position, 0.05, 0.0)
        return (np.random.default_rng(seed).random(n) < rate).astype("int8")
    stream = synth.ConceptDriftStream(
        _generator(spec["gen"], spec["before"], seed),
        _generator(spec["gen"], spec["after"], seed + 10_000),
        position=position, width=spec["width"], seed=seed,
    )  # fmt: skip
    model, errors = tree.HoeffdingTreeClassifier(), np.empty(n, dtype="int8")
    for i, (x, y) in enumerate(stream.take(n)):
        errors[i] = model.predict_one(x) != y
        model.learn_one(x, y)
    return errors


def alarms_of(detector: str, errors: np.ndarray) -> list[int]:
    if detector == "river_adwin":
        adwin, out = river_drift.ADWIN(), []
        for i, x in enumerate(errors.tolist()):
            adwin.update(x)
            if adwin.drift_detected:
                out.append(i)
        return out
    mon = ConceptDriftMonitor(window_test=detector == "fusionkit_default")
    return [a.offset for s in range(0, errors.size, BATCH) for a in mon.update(errors[s : s + BATCH]).alarms]  # fmt: skip


def run_one(job: tuple[str, int]) -> tuple[str, int, dict[str, list[int]]]:
    name, seed = job
    errors = error_stream(name, seed)
    return name, seed, {d: alarms_of(d, errors) for d in DETECTORS}


def score(name: str, runs: list[list[int]]) -> dict[str, float]:
    spec = STREAMS[name]
    start = spec["position"] - spec["width"] // 2
    end = spec["position"] + spec["width"] - spec["width"] // 2 + MAX_DELAY
    delays, false, outside = [], 0, 0
    for alarms in runs:
        a = np.asarray(alarms, dtype="int64")
        hit = a[(a >= start) & (a <= end)]
        if hit.size:
            delays.append(int(hit[0] - start))
        false += int(((a < start) | (a > end)).sum())
        outside += spec["n"] - (end - start + 1)
    return {
        "detection_rate": len(delays) / len(runs),
        "median_delay": float(np.median(delays)) if delays else None,
        "p90_delay": float(np.percentile(delays, 90)) if delays else None,
        "false_alarms_per_10k": 1e4 * false / outside,
        "false_alarms": false,
        "detected": len(delays),
        "runs": len(runs),
        "events_outside": outside,
    }


def concept_part(seeds: list[int], processes: int) -> dict:
    jobs = [(name, seed) for name in STREAMS for seed in seeds]
    runs: dict[str, dict[str, list]] = {n: {d: [] for d in DETECTORS} for n in STREAMS}
    with mp.get_context("fork").Pool(processes) as pool:
        for name, _, alarms in pool.imap_unordered(run_one, jobs):
            for d in DETECTORS:
                runs[name][d].append(alarms[d])
    out = {n: {d: score(n, runs[n][d]) for d in DETECTORS} for n in STREAMS}
    out["all"] = {d: _pooled([out[n][d] for n in STREAMS]) for d in DETECTORS}
    return out


def _pooled(rows: list[dict]) -> dict[str, float]:
    return {
        "drifts_detected": sum(r["detected"] for r in rows),
        "drifts": sum(r["runs"] for r in rows),
        "false_alarms_per_10k": 1e4
        * sum(r["false_alarms"] for r in rows)
        / sum(r["events_outside"] for r in rows),
    }


def stationary_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame({
        "amount": rng.lognormal(3.0, 1.0, n),
        "score": rng.normal(0.0, 1.0, n),
        "hour": rng.integers(0, 24, n),
        "country": rng.choice(np.array(list("abcde"), dtype=object), n,
                              p=[0.4, 0.3, 0.15, 0.1, 0.05]),
    })  # fmt: skip


def feature_false_alarms(seeds: list[int], reference: int, window: int, windows: int,
                         psi_alarm: float) -> dict:  # fmt: skip
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = reference + windows * window
        frame, preds = stationary_frame(rng, n), rng.beta(2.0, 5.0, n)
        mon = FeatureDriftMonitor(reference=reference, window=window, psi_alarm=psi_alarm)
        for s in range(0, n, BATCH):
            rows += mon.update(frame.iloc[s : s + BATCH], predictions=preds[s : s + BATCH]).rows
    df = pd.DataFrame(rows)
    return {
        "reference": reference, "window": window, "psi_alarm": psi_alarm,
        "tests": len(df), "alarm_rate": float(df["alarm"].mean()),
        "psi_only_rate": float((df["psi"] >= psi_alarm).mean()),
        "test_only_rate": float((df["p_value"] < 0.01).mean()),
        "alarm_rate_by_feature": df.groupby("feature")["alarm"].mean().round(4).to_dict(),
        "max_psi": float(df["psi"].max()),
    }  # fmt: skip


def feature_power(seeds: list[int]) -> dict[str, float]:
    """Share of seeds where a mean shift (in sigmas) is flagged in the first window after it."""
    out = {}
    for shift in (0.25, 0.4, 0.5, 1.0):
        flagged = 0
        for seed in seeds:
            rng = np.random.default_rng(1000 + seed)
            x = np.r_[rng.normal(0, 1, 15_000), rng.normal(shift, 1, 5_000)]
            rows = FeatureDriftMonitor().update(pd.DataFrame({"x": x})).rows
            flagged += rows[-1]["alarm"] and not rows[0]["alarm"]
        out[f"{shift}_sigma"] = flagged / len(seeds)
    return out


def _train_loop(model_factory, frame: pd.DataFrame, monitor: DriftMonitor | None) -> tuple:
    """Events/s of the loop, and the seconds spent in the monitor."""
    model, features, in_monitor = model_factory(), ["amount", "score", "hour"], 0.0
    start = time.perf_counter()
    for s in range(0, len(frame), BATCH):
        batch = frame.iloc[s : s + BATCH]
        preds, errors = [], []
        for x, y in zip(batch[features].to_dict("records"), batch["y"].tolist(), strict=True):
            p = model.predict_one(x)
            preds.append(0.0 if p is None else float(p))
            errors.append(p != y)
            model.learn_one(x, y)
        if monitor is not None:
            t = time.perf_counter()
            monitor.update(batch, predictions=np.asarray(preds), errors=np.asarray(errors))
            in_monitor += time.perf_counter() - t
    return len(frame) / (time.perf_counter() - start), in_monitor


def cost_part(events: int, repeats: int) -> dict:
    """What drift monitoring costs a train loop, robust to a noisy shared machine.

    Runs with and without the monitor alternate (which goes first alternates too), so
    load from other processes hits both alike; the best run of each is the least disturbed.
    Reported: the throughput cost (best with against best without, and the median of the
    paired runs' ratios), and the monitor's time as a share of the training time within
    the same runs (median), which does not depend on how the load varied between runs.
    """
    rng = np.random.default_rng(0)
    frame = stationary_frame(rng, events)
    frame["y"] = (frame["score"] + 0.01 * frame["hour"] > 0.1).astype(bool)
    frame["_offset"] = np.arange(events)
    learners = {
        "logistic_regression": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "hoeffding_tree": tree.HoeffdingTreeClassifier,
    }  # fmt: skip
    out = {}
    for name, factory in learners.items():
        sub = frame if name == "logistic_regression" else frame.iloc[: events // 2]
        base, watched, shares, monitor_us = [], [], [], []
        for r in range(repeats):
            for with_monitor in ((False, True) if r % 2 == 0 else (True, False)):
                if not with_monitor:
                    base.append(_train_loop(factory, sub, None)[0])
                    continue
                rate, in_monitor = _train_loop(factory, sub, DriftMonitor(features=WATCHED))
                watched.append(rate)
                shares.append(in_monitor / (len(sub) / rate - in_monitor))
                monitor_us.append(1e6 * in_monitor / len(sub))
        b, w = max(base), max(watched)
        paired = [1.0 - wr / br for wr, br in zip(watched, base, strict=True)]
        out[name] = {
            "events": len(sub), "repeats": repeats,
            "events_per_s_without": b, "events_per_s_with": w,
            "throughput_cost_pct": 100.0 * (1.0 - w / b),
            "throughput_cost_pct_median_of_pairs": 100.0 * float(np.median(paired)),
            "monitor_time_pct_of_training": 100.0 * float(np.median(shares)),
            "monitor_time_pct_of_training_min": 100.0 * float(min(shares)),
            "monitor_us_per_event_in_loop": float(np.median(monitor_us)),
            "train_us_per_event_without": 1e6 / b,
        }  # fmt: skip
    errors, preds = rng.random(events) < 0.1, rng.random(events)
    alone = []
    for _ in range(repeats):
        mon, t = DriftMonitor(features=WATCHED), time.perf_counter()
        for s in range(0, events, BATCH):
            mon.update(frame.iloc[s : s + BATCH], preds[s : s + BATCH], errors[s : s + BATCH])
        alone.append(1e6 * (time.perf_counter() - t) / events)
    out["monitor_alone_us_per_event"] = min(alone)
    out["monitor_alone_us_per_event_median"] = float(np.median(alone))
    out["watched"] = "4 features + prediction + error stream"
    out["load_average"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return out


def stage_cost_part(events: int, repeats: int, batch: int = 1000) -> dict:
    """The train stage's events/s with and without a drift watch, alternating pairs."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    import train_throughput as tt

    import fusionkit as fk

    df = tt.clicks(events)
    fk.connect()
    try:
        tt.train_stage(df.iloc[: events // 5], "river", batch, 0.2)  # warm-up, not counted
        base, watched, shares = [], [], []
        for r in range(repeats):
            for drift in (False, True) if r % 2 == 0 else (True, False):
                row = tt.train_stage(df, "river", batch, 0.2, drift={} if drift else None)
                assert row["complete"], row
                (watched if drift else base).append(row["events_per_s"])
                share = ""
                if drift:  # the train actor's own CPU accounting: learning steps, the watch
                    # in them, and the watch's reports to the monitor (a thread of its own)
                    watch = row["cpu_drift"] + row["cpu_drift_reporting"]
                    shares.append(watch / (row["cpu_learning"] - row["cpu_drift"]))
                    share = f", the watch's CPU {100 * shares[-1]:.1f}% of the rest of learning"
                print(f"  stage {'with' if drift else 'without'} drift watch: "
                      f"{row['events_per_s']:,} events/s{share}", flush=True)
    finally:
        fk.shutdown()
    paired = [1.0 - w / b for w, b in zip(watched, base, strict=True)]
    return {
        "events": events, "batch": batch, "repeats": repeats,
        "model": "StandardScaler | LogisticRegression (River, learned event by event)",
        "features": tt.FEATURES, "watch": "fk.watch_drift defaults",
        "events_per_s_without": base, "events_per_s_with": watched,
        "throughput_cost_pct_best": 100.0 * (1.0 - max(watched) / max(base)),
        "throughput_cost_pct_median_of_pairs": 100.0 * float(np.median(paired)),
        "throughput_cost_pct_median": 100.0 * (1.0 - np.median(watched) / np.median(base)),
        "watch_cpu_pct_of_learning": [100.0 * x for x in shares],
        "watch_cpu_pct_of_learning_median": 100.0 * float(np.median(shares)),
        "load_average": os.getloadavg(),
    }  # fmt: skip


# -- a learning model on a stationary stream (part 5) ------------------------------------------
STATIONARY = {"events": 60_000, "shift_events": 40_000, "shift_at": 25_000, "batch": 500}
NUMERIC = ["price", "dwell", "age", "hour", "position"]
LEARNING = {  # name: (the model, its features, learner options)
    "lr": ("StandardScaler | LogisticRegression, event by event", NUMERIC, {}),
    "lr_mini_batch": ("StandardScaler | LogisticRegression, mini_batch=True", NUMERIC,
                      {"mini_batch": True}),
    "tutorial": ("the tutorial's pipeline (scaled numbers, one-hot device and country)", None,
                 {}),
}  # fmt: skip
SHIFTS = {"price_1sd": ("price", 1.0), "dwell_1sd": ("dwell", 1.0)}
WATCHES = ("before", "after")
KINDS = ("feature", "prediction", "concept")


def _learning_model(name: str):
    if name == "tutorial":
        from fusionkit.demo import ctr_model

        return ctr_model()
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


class _Stage:
    """What a train stage does with a batch (fusionkit.training.worker._learn), without
    Ray: predict then learn, the prequential step, then each drift watch. The "before" watch
    is handed no stage, so it watches the predictions given (as every watch did before);
    the "after" one is handed the stage, whose learner scores its prediction samples."""

    def __init__(self, model: str):
        _, features, options = LEARNING[model]
        self.learner = adapt(_learning_model(model), features=features, **options)
        self.prequential = Prequential(self.learner.task)
        self.watches = {w: DriftWatch(DriftSpec(), "ctr", self.learner.task, features)
                        for w in WATCHES}  # fmt: skip
        self.alarms: dict[str, list[dict]] = {w: [] for w in WATCHES}
        self.seconds = dict.fromkeys(WATCHES, 0.0)
        self.learning = 0.0
        self.max_psi = dict.fromkeys(WATCHES, 0.0)

    def learn(self, batch: pd.DataFrame) -> None:
        t = time.perf_counter()
        y = batch["clicked"]
        pred = self.learner.predict_learn(batch, y)
        self.prequential.update(y, pred)
        self.learning += time.perf_counter() - t
        for w, watch in self.watches.items():
            t = time.perf_counter()
            watch.observe(batch, y, pred, self.learner if w == "after" else None)
            self.seconds[w] += time.perf_counter() - t
            rows, alarms = watch.take()
            self.alarms[w] += alarms
            psi = [r["psi"] for r in rows if r["kind"] == "prediction"]
            self.max_psi[w] = max([self.max_psi[w], *psi])


def stationary_run(job: tuple[str, int, str | None]) -> dict:
    """One stream learned by one model and watched both ways: the alarms and the time."""
    model, seed, shift = job
    n = STATIONARY["events"] if shift is None else STATIONARY["shift_events"]
    drift = []
    if shift is not None:
        feature, sd = SHIFTS[shift]
        drift = [FeatureDrift(feature, at=STATIONARY["shift_at"], shift=sd)]
    src = Synthetic(rate=None, seed=seed, max_events=n, start_time=0.0, drift=drift)
    src.open()
    stage = _Stage(model)
    while (batch := src.read(STATIONARY["batch"])) is not None:
        stage.learn(batch)
    alarms = {w: [(a["kind"], a["feature"], int(a["offset"])) for a in stage.alarms[w]]
              for w in WATCHES}  # fmt: skip
    return {"model": model, "seed": seed, "shift": shift, "events": n, "alarms": alarms,
            "seconds": stage.seconds, "learning": stage.learning, "max_psi": stage.max_psi}


def _detection(runs: list[dict], watch: str, kind: str, feature: str) -> dict:
    """Share of runs where ``kind`` alarmed on ``feature`` after the shift, and how late."""
    at, delays, early = STATIONARY["shift_at"], [], 0
    for r in runs:
        hits = [o for k, f, o in r["alarms"][watch] if k == kind and f == feature]
        early += any(o < at for o in hits)
        late = [o - at for o in hits if o >= at]
        if late:
            delays.append(min(late))
    window = DriftSpec().window  # the shift starts a window: its first ends window - 1 later
    return {"detection_rate": len(delays) / len(runs),
            "first_window_rate": sum(d < window for d in delays) / len(runs),
            "alarms_before_the_shift": early,
            "median_delay": float(np.median(delays)) if delays else None,
            "max_delay": max(delays) if delays else None}  # fmt: skip


def stationary_part(seeds: list[int], processes: int, quick: bool = False) -> dict:
    if quick:
        STATIONARY.update(events=30_000, shift_events=30_000, shift_at=20_000)
    jobs = [(m, s, None) for m in LEARNING for s in seeds]
    jobs += [(m, s, shift) for shift in SHIFTS for m in ("lr", "lr_mini_batch") for s in seeds]
    with mp.get_context("fork").Pool(processes) as pool:
        runs = pool.map(stationary_run, jobs, chunksize=1)
    out: dict = {"config": {**STATIONARY, "seeds": len(seeds),
                            "models": {m: LEARNING[m][0] for m in LEARNING},
                            "watch": "fk.watch_drift defaults: every model feature, reference "
                                     "the first 10,000 events, windows of 5,000, psi_alarm "
                                     "0.2, ks_alpha 0.01, predictions, ADWIN + window test"}}
    stationary = {}
    for m in LEARNING:
        rs = [r for r in runs if r["model"] == m and r["shift"] is None]
        events = sum(r["events"] for r in rs)
        row = {"events": events, "runs": len(rs)}
        for w in WATCHES:
            counts = {k: sum(a[0] == k for r in rs for a in r["alarms"][w]) for k in KINDS}
            row[w] = {
                "false_alarms": counts,
                "false_alarms_per_100k": {k: 1e5 * v / events for k, v in counts.items()},
                "false_alarms_per_100k_all_kinds": 1e5 * sum(counts.values()) / events,
                "runs_with_a_prediction_alarm": sum(any(a[0] == "prediction"
                                                        for a in r["alarms"][w]) for r in rs),
                "max_prediction_psi": max(r["max_psi"][w] for r in rs),
                "watch_us_per_event": 1e6 * sum(r["seconds"][w] for r in rs) / events,
                "watch_pct_of_learning": 100 * sum(r["seconds"][w] for r in rs)
                / sum(r["learning"] for r in rs),
                "watch_pct_of_learning_median_of_runs": 100 * float(np.median(
                    [r["seconds"][w] / r["learning"] for r in rs])),
            }  # fmt: skip
        stationary[m] = row
    out["stationary"] = stationary
    shifted = {}
    for shift, (feature, _) in SHIFTS.items():
        for m in ("lr", "lr_mini_batch"):
            rs = [r for r in runs if r["model"] == m and r["shift"] == shift]
            shifted[f"{shift}/{m}"] = {w: {
                "feature": _detection(rs, w, "feature", feature),
                "prediction": _detection(rs, w, "prediction", "prediction"),
            } for w in WATCHES}  # fmt: skip
    out["shift"] = shifted
    out["load_average"] = os.getloadavg()
    return out


def print_stationary(st: dict) -> None:
    c = st["config"]
    print(f"\nA learning model on a stationary stream ({c['seeds']} seeds x {c['events']:,} "
          "events): false alarms per 100k events, before -> after")
    for m, row in st["stationary"].items():
        b, a = row["before"], row["after"]
        kinds = ", ".join(f"{k} {b['false_alarms_per_100k'][k]:.2f} -> "
                          f"{a['false_alarms_per_100k'][k]:.2f}" for k in KINDS)  # fmt: skip
        print(f"  {m:14s} all {b['false_alarms_per_100k_all_kinds']:.2f} -> "
              f"{a['false_alarms_per_100k_all_kinds']:.2f} ({kinds}); max prediction PSI "
              f"{b['max_prediction_psi']:.3f} -> {a['max_prediction_psi']:.3f}; watch "
              f"{b['watch_us_per_event']:.2f} -> {a['watch_us_per_event']:.2f} us/event "
              f"({b['watch_pct_of_learning_median_of_runs']:.1f}% -> "
              f"{a['watch_pct_of_learning_median_of_runs']:.1f}% of learning, median of runs)")
    print(f"  a feature shift at event {c['shift_at']:,}: detection rate, median / max delay "
          "(events), before -> after")
    for name, row in st["shift"].items():
        for kind in ("feature", "prediction"):
            b, a = row["before"][kind], row["after"][kind]
            print(f"    {name:24s} {kind:10s} {b['detection_rate']:.2f} (first window "
                  f"{b['first_window_rate']:.2f}) {b['median_delay']} / {b['max_delay']} -> "
                  f"{a['detection_rate']:.2f} (first window {a['first_window_rate']:.2f}) "
                  f"{a['median_delay']} / {a['max_delay']}; alarms before the shift "
                  f"{b['alarms_before_the_shift']} -> {a['alarms_before_the_shift']}")
    print(f"  load average {st['load_average']}")


def print_tables(res: dict) -> None:
    if "concept" in res:
        print_concept(res["concept"])
    if "features" in res:
        print_features(res["features"])
    if "cost" in res:
        print_cost(res["cost"])
    if "stationary" in res:
        print_stationary(res["stationary"])
    if "stage_cost" in res:
        r = res["stage_cost"]
        print(f"\nCost of a drift watch on the train stage (batch {r['batch']}, "
              f"{r['events']:,} events, {r['repeats']} pairs, load {r['load_average']})")
        print(f"  events/s without: {r['events_per_s_without']}")
        print(f"  events/s with:    {r['events_per_s_with']}")
        print(f"  the watch's CPU time in the train actor (its steps and its reports): "
              f"{r['watch_cpu_pct_of_learning_median']:.1f}% of the learning steps' (median)")
        print(f"  throughput cost: median of pairs {r['throughput_cost_pct_median_of_pairs']:+.1f}%, "
              f"of medians {r['throughput_cost_pct_median']:+.1f}%, "
              f"best vs best {r['throughput_cost_pct_best']:+.1f}%")


def print_concept(concept: dict) -> None:
    print("\nConcept drift: detection rate, median / p90 delay (events), false alarms per 10k")
    print(f"{'stream':18s}" + "".join(f"{d:>34s}" for d in DETECTORS))
    for name in STREAMS:
        cells = []
        for d in DETECTORS:
            r = concept[name][d]
            med = "-" if r["median_delay"] is None else f"{r['median_delay']:.0f}"
            p90 = "-" if r["p90_delay"] is None else f"{r['p90_delay']:.0f}"
            cells.append(
                f"{r['detection_rate']:5.2f} {med:>6s} {p90:>6s} {r['false_alarms_per_10k']:6.2f}"
            )
        print(f"{name:18s}" + "".join(f"{c:>34s}" for c in cells))
    cells = [f"{concept['all'][d]['drifts_detected']:>3d}/{concept['all'][d]['drifts']} drifts"
             f" {concept['all'][d]['false_alarms_per_10k']:6.2f}" for d in DETECTORS]  # fmt: skip
    print(f"{'all':18s}" + "".join(f"{c:>34s}" for c in cells))


def print_features(features: dict) -> None:
    print("\nFeature drift on stationary data (per window per feature)")
    for key in ("defaults", "window_200"):
        r = features[key]
        print(f"  ref {r['reference']:>5d} window {r['window']:>4d} psi_alarm {r['psi_alarm']}: "
              f"alarms {r['alarm_rate']:.4f} of {r['tests']} tests (PSI alone "
              f"{r['psi_only_rate']:.4f}, test alone {r['test_only_rate']:.4f}), "
              f"max PSI {r['max_psi']:.3f}")  # fmt: skip
    print("  mean shift flagged in the first window:", features["shift_flagged"])


def print_cost(c: dict) -> None:
    print("\nCost of drift monitoring (prequential train loop, 500-event batches)")
    for name in ("logistic_regression", "hoeffding_tree"):
        r = c[name]
        print(
            f"  {name:20s} {r['events_per_s_without']:9.0f} ev/s without, "
            f"{r['events_per_s_with']:9.0f} with (best of {r['repeats']}: "
            f"{r['throughput_cost_pct']:+.1f}%, median of pairs "
            f"{r['throughput_cost_pct_median_of_pairs']:+.1f}%); time in the monitor "
            f"{r['monitor_time_pct_of_training']:.1f}% of the training time (median, min "
            f"{r['monitor_time_pct_of_training_min']:.1f}%), "
            f"{r['monitor_us_per_event_in_loop']:.2f} us/event"
        )
    print(f"  DriftMonitor alone: {c['monitor_alone_us_per_event']:.2f} us/event (best; "
          f"median {c['monitor_alone_us_per_event_median']:.2f}), load average "
          f"{c['load_average']}")  # fmt: skip


PARTS = ("concept", "features", "cost", "stationary", "stage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds, smaller runs (smoke)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7,
                        help="runs with and without the monitor, alternating (cost part)")
    parser.add_argument("--stage", action="store_true",
                        help="also the stage cost part (starts a local Ray)")
    parser.add_argument("--stage-repeats", type=int, default=3)
    parser.add_argument("--only", choices=PARTS, action="append",
                        help="run only this part (repeatable); merged into the results file")
    parser.add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON output (default {RESULTS} for a full run)")  # fmt: skip
    args = parser.parse_args()
    parts = set(args.only or ([*PARTS] if args.stage else PARTS[:4]))
    seeds = list(range(3 if args.quick else args.seeds))
    t0 = time.perf_counter()
    res = {"config": {"seeds": len(seeds), "quick": args.quick, "max_delay": MAX_DELAY,
                      "batch": BATCH, "streams": STREAMS, "python": platform.python_version(),
                      "cpus": os.cpu_count()}}  # fmt: skip
    if "concept" in parts:
        res["concept"] = concept_part(seeds, args.processes)
    if "features" in parts:
        windows = 3 if args.quick else 10
        res["features"] = {
            "defaults": feature_false_alarms(seeds, 10_000, 5_000, windows, 0.2),
            "window_200": feature_false_alarms(seeds, 2_000, 200, 9 * windows, 0.1),
            "shift_flagged": feature_power(seeds),
        }
    if "cost" in parts:
        res["cost"] = cost_part(20_000 if args.quick else 100_000,
                                2 if args.quick else args.repeats)
    if "stationary" in parts:
        res["stationary"] = stationary_part(seeds, args.processes, args.quick)
    if "stage" in parts:
        res["stage_cost"] = stage_cost_part(40_000 if args.quick else 200_000,
                                            1 if args.quick else args.stage_repeats)
    res["seconds"] = time.perf_counter() - t0
    print_tables(res)
    print(f"\n{res['seconds']:.0f} s")
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        if args.only and out.exists():  # one part: the others stay from their own run
            res = {**json.loads(out.read_text()), **res, "config": res["config"]}
        res.setdefault("parts_run", {})
        for part in parts:
            res["parts_run"][part] = time.strftime("%Y-%m-%d %H:%M")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2, default=float))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
