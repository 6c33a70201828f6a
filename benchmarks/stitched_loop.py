"""The feedback loop stitched the traditional way, for ``benchmarks/feedback_loop.py --loop``.

The processes of ``benchmarks/stitched.py`` with a join in front, glued by Redis streams, a
file and polling:

- ``feed``: ``fk.sources.synthetic_feedback`` at ``--rate`` impressions/s. One thread paces
  the impressions as ``stitched.py stream`` (and fusionkit's stream stage) pace a source: an
  event is due at ``start + k / rate``, a micro-batch is cut when 500 are due or the oldest
  has waited ``linger``; it appends each micro-batch to the Redis stream ``impressions``. A
  second thread reads the outcomes (released when the wall clock reaches their event time)
  and appends what it got to ``outcomes``, waiting 5 ms when nothing came, as fusionkit's
  stream stage does with a source that has nothing yet. One entry per micro-batch, Arrow IPC.
- ``join``: reads both streams with ``XREAD BLOCK`` and joins them with fusionkit's own
  ``IntervalJoin`` in-process (same ``within``, label, default and ``idle`` as the fused
  pipeline's ``fk.join``: what differs is the plumbing around it). The examples of each
  ``XREAD`` (one entry per stream when keeping up) are stamped with the time the joiner
  wrote them (``_ingest_ts``: complete then, as the join stage stamps its output) and
  appended to the Redis stream ``examples`` as one entry; without input it lets processing time
  reach the join (``advance``) as the join stage's ticker does (at least every 0.5 s), so
  idle inputs stop holding the watermark. On SIGTERM it writes its counts to
  ``<folder>/join.json``, with how far behind the feed's schedule it read the impressions
  (p50, p99: a feed or joiner that does not keep up shows here).
- then ``python benchmarks/stitched.py train --key examples`` (learns the examples, saves
  ``model.pkl`` every P seconds) and ``stitched.py serve`` (polls the file every Q seconds).

Run ``python benchmarks/stitched_loop.py ROLE --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from stitched import _on_sigterm, _redis, pack, unpack  # noqa: E402

LEFT, RIGHT, EXAMPLES = "impressions", "outcomes", "examples"
DROP = ["_event_time", "_offset", "request_id"]  # not learned (fusionkit's train drops them)


# -- feed --------------------------------------------------------------------------------
def run_feed(args: argparse.Namespace) -> None:
    from fusionkit.runtime.pacer import Pacer
    from fusionkit.sources.feedback import synthetic_feedback

    ads, clicks = synthetic_feedback("ads", rate=args.rate, seed=args.seed,
                                     delay=f"{args.delay}s", late_fraction=0.02,
                                     horizon=f"{args.within}s")
    ads.open()
    clicks.open()
    stop = _on_sigterm()

    def impressions() -> None:
        r = _redis(args.redis)
        pacer = Pacer(args.rate, args.batch_size, args.linger)
        while not stop.is_set():
            n, ingest = pacer.take(stop)
            if n == 0:
                continue
            batch = ads.read(n)
            pacer.consumed(len(batch))
            batch["_ingest_ts"] = ingest[: len(batch)]
            r.xadd(LEFT, {"b": pack(batch)}, maxlen=10_000, approximate=True)

    def outcomes() -> None:
        r = _redis(args.redis)
        while not stop.is_set():
            batch = clicks.read(args.batch_size)
            if batch is None:
                return
            if not len(batch):
                stop.wait(0.005)
                continue
            batch["_ingest_ts"] = time.time()
            r.xadd(RIGHT, {"b": pack(batch)}, maxlen=10_000, approximate=True)

    threads = [threading.Thread(target=f, daemon=True) for f in (impressions, outcomes)]
    for t in threads:
        t.start()
    while not stop.wait(0.2):
        pass
    for t in threads:
        t.join(timeout=5)


# -- join --------------------------------------------------------------------------------
def run_join(args: argparse.Namespace) -> None:
    from fusionkit.streaming.join import IntervalJoin

    r = _redis(args.redis)
    join = IntervalJoin(on="request_id", within=args.within, label="clicked", default=0,
                        idle=args.idle)
    stop = _on_sigterm()
    last = {LEFT: "0-0", RIGHT: "0-0"}  # the streams are new: read them from the start
    tick = min(0.5, args.idle / 4) if args.idle else 0.5
    advanced = time.monotonic()
    written = 0
    behind: list[float] = []

    def write(outs: list[pd.DataFrame]) -> None:
        nonlocal written
        join.side_outputs()  # drained; the join counts them
        outs = [o for o in outs if len(o)]
        if outs:
            out = pd.concat(outs, ignore_index=True).drop(columns=DROP, errors="ignore")
            out["_ingest_ts"] = time.time()  # complete now: freshness counts from here
            r.xadd(EXAMPLES, {"b": pack(out)}, maxlen=10_000, approximate=True)
            written += len(out)

    while not stop.is_set():
        reply = r.xread(dict(last), count=100, block=100)
        outs = []
        for key, entries in reply or ():
            side = key.decode() if isinstance(key, bytes) else key
            for entry_id, fields in entries:
                last[side] = entry_id
                batch = unpack(fields[b"b"])
                if side == LEFT and len(batch):  # how far behind the feed's schedule
                    behind.append(time.time() - float(batch["_ingest_ts"].iloc[-1]))
                outs.append(join.process_left(batch) if side == LEFT
                            else join.process_right(batch))
        if args.idle is not None and (not reply or time.monotonic() - advanced >= tick):
            outs.append(join.advance())
            advanced = time.monotonic()
        write(outs)  # one entry for what this read completed
    counts = {k: int(v) for k, v in join.counts.items()}
    lag = np.quantile(behind, [0.5, 0.99]) if behind else [np.nan, np.nan]
    (Path(args.folder) / "join.json").write_text(json.dumps(
        {**counts, "written": written, "read_behind_p50_s": round(float(lag[0]), 3),
         "read_behind_p99_s": round(float(lag[1]), 3)}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    f = roles.add_parser("feed", help="impressions and outcomes -> two Redis streams")
    f.add_argument("--redis", type=int, required=True)
    f.add_argument("--rate", type=float, required=True, help="impressions per second")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--within", type=float, required=True, help="the outcomes' horizon (s)")
    f.add_argument("--delay", type=float, required=True, help="mean outcome delay (s)")
    f.add_argument("--batch-size", type=int, default=500)
    f.add_argument("--linger", type=float, default=0.01)
    j = roles.add_parser("join", help="two Redis streams -> IntervalJoin -> examples stream")
    j.add_argument("--redis", type=int, required=True)
    j.add_argument("--folder", required=True, help="where join.json goes when stopped")
    j.add_argument("--within", type=float, required=True)
    j.add_argument("--idle", type=float, default=None)
    args = parser.parse_args(argv)
    {"feed": run_feed, "join": run_join}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
