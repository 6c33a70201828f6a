"""The main job: a drifting click stream, learned online and served, with a summary."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import pandas as pd

import fusionkit as fk
from fusionkit._clock import monotonic

NUMERIC = ["price", "dwell", "age", "hour", "position"]
CATEGORICAL = ["device", "country"]


def ctr_model():
    """A River pipeline for the synthetic click stream: scaled numbers, one-hot categories."""
    from river import compose, linear_model, preprocessing

    numeric = compose.Select(*NUMERIC) | preprocessing.StandardScaler()
    categorical = compose.Select(*CATEGORICAL) | preprocessing.OneHotEncoder()
    return (numeric + categorical) | linear_model.LogisticRegression()


def featurize(df: pd.DataFrame) -> pd.DataFrame:
    """A vectorized feature step: price per second of dwell, evening flag."""
    df = df.copy()
    df["evening"] = (df["hour"] >= 18).astype("int64")
    return df


class LoadGenerator(threading.Thread):
    """Posts small batches of rows to the serve stage over HTTP at a steady rate."""

    def __init__(self, url: str, rows: list[dict[str, Any]], qps: float):
        super().__init__(daemon=True, name="fk-load")
        self.url, self.rows, self.qps = url, rows, qps
        self.stop_event = threading.Event()
        self.ok = self.failed = 0
        self.latency: list[float] = []
        self.versions: list[int] = []

    def run(self) -> None:
        import httpx

        period = 1.0 / self.qps
        with httpx.Client(timeout=10.0) as client:
            next_at = monotonic()
            while not self.stop_event.is_set():
                t0 = monotonic()
                try:
                    r = client.post(self.url, json={"rows": self.rows})
                    if r.status_code == 200:
                        self.ok += 1
                        self.versions.append(r.json()["version"])
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1
                self.latency.append(monotonic() - t0)
                next_at += period
                self.stop_event.wait(max(0.0, next_at - monotonic()))


def _progress(t: float, status: pd.DataFrame, extra: str) -> str:
    parts = [f"{t:5.1f}s"]
    for name, row in status.iterrows():
        parts.append(f"{name}: {row['status']} {int(row['events']):>8,d} ev {row['rate']:>8,.0f}/s")
    return " | ".join(parts) + extra


def run_demo(args: Any) -> int:
    print("fusionkit demo: starting an embedded Ray (about 10 s, longer on a busy machine)...",
          flush=True)
    fk.connect()
    if not args.no_serve:
        port = getattr(args, "port", 8000)
        print(f"starting Ray Serve (HTTP on 127.0.0.1:{port})...", flush=True)
        from fusionkit.serving.deploy import start

        # Serve's driver-side logger says "Started Serve in namespace ..." at INFO, whatever
        # level it was given before: not news here, the line above said it
        logging.disable(logging.INFO)
        try:
            start(port=port)
        finally:
            logging.disable(logging.NOTSET)
    seconds = float(args.seconds)
    drift_at = f"{seconds / 2:.0f}s"
    src = fk.sources.synthetic("clicks", rate=args.rate, seed=7,
                               drift=[fk.sources.ConceptDrift(at=drift_at)])
    t_start = time.time()
    fk.stream("clicks", source=src, fn=featurize, batch_size=1000)
    fk.train("ctr", on="clicks", label="clicked", model=ctr_model(),
             publish_every=args.publish_every)
    load = None
    if not args.no_serve:
        api = fk.serve("ctr-api", model="ctr", replicas=args.replicas,
                       port=getattr(args, "port", 8000))
        sample = fk.peek("clicks", 10)
        rows = sample.drop(columns=[c for c in sample.columns
                                    if c.startswith("_") or c == "clicked"]).to_dict("records")
        load = LoadGenerator(api.info()["url"], rows, args.qps)
        load.start()
    # the clock of the progress lines starts with the stream, as the drift's time does
    drift_offset = src.drift_points()[0].offset
    print(f"the stream started; its concept drifts at {drift_at} (event {drift_offset:,}): "
          f"watch the accuracy dip, then recover", flush=True)
    t0 = monotonic()
    drift_told = False
    try:
        while monotonic() - t0 < seconds:
            time.sleep(1.0)
            st = fk.status()
            fk.check()
            acc = fk.metrics("ctr")
            acc_txt = ""
            if len(acc) and "accuracy_recent" in acc:
                acc_txt = f" | accuracy {acc['accuracy_recent'].dropna().iloc[-1]:.3f}"
            if not drift_told and st.loc["clicks", "events"] >= drift_offset:
                drift_told = True
                print(f"-- concept drift at event {drift_offset:,} --", flush=True)
            print(_progress(time.time() - t_start, st, acc_txt), flush=True)
    except KeyboardInterrupt:
        print("interrupted: summarizing what ran", flush=True)
    finally:
        if load is not None:
            load.stop_event.set()
            load.join(timeout=5)
    _settle()
    summary = summarize(t_start, src, load)
    print()
    print(summary.to_string(header=False))
    if load is not None:
        print(f"\nfreshness: per event, the time from the stream reading it to the first "
              f"answer by a model version that learned it (learning, the wait for the next "
              f"publish, every {args.publish_every} here, and the swap into the replicas)")
    if args.report:
        from fusionkit.report import write_report

        path = write_report(args.report, title="fusionkit demo", drift_time=t_start + seconds / 2,
                            summary=summary)
        print(f"\nreport: {path}")
    fk.shutdown()
    return 0


def _settle(timeout: float = 15.0) -> None:
    """Pause the stream and let the trainer learn what is in flight, so the summary's
    "events learned" is every event streamed (a batch or two still on their way otherwise)."""
    fk.pause("clicks")
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        st = fk.status()
        if st.loc["ctr", "events"] >= st.loc["clicks", "events"]:
            return
        time.sleep(0.2)


def summarize(t_start: float, src: Any, load: LoadGenerator | None) -> pd.Series:
    st = fk.status()
    train = fk.metrics("ctr")
    versions = fk.models("ctr")
    elapsed = time.time() - t_start
    drift_time = t_start + (src.drift_points()[0].offset / src.rate if src.drift_points() else 0)
    out: dict[str, Any] = {
        "events streamed": int(st.loc["clicks", "events"]),
        "events learned": int(st.loc["ctr", "events"]),
        "throughput (events/s)": round(st.loc["clicks", "events"] / elapsed, 1),
        "dead letters": int(st["dead_letters"].sum()),
        "versions published": len(versions),
    }
    if len(train) and "accuracy_recent" in train:
        before = train[train["time"] < drift_time]["accuracy_recent"].dropna()
        after = train[train["time"] > drift_time + 5]["accuracy_recent"].dropna()
        dip = train[(train["time"] > drift_time) & (train["time"] < drift_time + 5)]
        out["accuracy before drift"] = round(float(before.iloc[-1]), 4) if len(before) else None
        if len(dip):
            out["accuracy right after drift (min)"] = round(float(dip["accuracy_recent"].min()), 4)
        out["accuracy at the end"] = round(float(after.iloc[-1]), 4) if len(after) else None
    if load is not None:
        fresh = fk.freshness("ctr") if hasattr(fk, "freshness") else {}
        lat = np.asarray(load.latency) * 1000
        out.update({
            "freshness p50 (ms)": round(fresh.get("p50_ms", float("nan")), 1),
            "freshness p99 (ms)": round(fresh.get("p99_ms", float("nan")), 1),
            "requests ok / failed": f"{load.ok} / {load.failed}",
            "HTTP latency p50 (ms)": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "HTTP latency p99 (ms)": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "versions answered": len(set(load.versions)),
        })
    return pd.Series(out, name="fusionkit demo")
