"""Broker sources: events/s and source-to-stage latency, against the broker's own client.

A redis-server is started on a free loopback port (no persistence). Two measurements, each
done two ways in the same run:

- throughput: ``--events`` JSON events are written to a stream first, then drained
  - by ``redis-py`` in a plain loop: ``XREADGROUP COUNT b``, ``json.loads`` per entry and
    a DataFrame per batch (the work the source does, without a pipeline around it);
  - by a fusionkit stream stage reading ``fk.sources.redis`` with ``batch_size=b``
    (defined paused, timed from ``resume`` until its ``events_in`` total reaches the count).
- latency: a producer process writes events at ``--rate`` per second for ``--seconds``,
  each stamped with the wall clock at ``XADD``; the latency of an event is the time from
  that stamp until
  - the plain loop has decoded it, or
  - the stream stage's ``fn`` sees it (its value is written back with ``fk.sinks.redis`` and
    read after the run).

Run ``python benchmarks/sources.py`` (about a minute) or ``--quick``; prints a table and
writes benchmarks/results/sources.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, summary_ms, table, write_result  # noqa: E402

BATCH = 500


def produce_paced(url: str, stream: str, rate: float, seconds: float) -> None:
    """Write events at ``rate`` per second for ``seconds``, in small pipelines (every 5 ms)."""
    import redis

    client = redis.Redis.from_url(url)
    start = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                pipe.xadd(stream, {"data": json.dumps({"i": i, "x": i % 7, "t": time.time()})})
            pipe.execute()
            sent = due
        time.sleep(0.005)


def prefill(client: Any, stream: str, n: int) -> None:
    for start in range(0, n, 5000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            pipe.xadd(stream, {"data": json.dumps({"i": i, "x": i % 7, "t": 0.0})})
        pipe.execute()


def plain_loop(client: Any, stream: str, n: int, batch: int,
               latency: bool = False) -> tuple[float, list[float]]:
    """Read ``n`` events with redis-py; return (seconds, per-event latencies)."""
    client.xgroup_create(stream, "plain", id="0", mkstream=True)
    got, lat = 0, []
    t0 = time.perf_counter()
    while got < n:
        reply = client.xreadgroup("plain", "loop", {stream: ">"}, count=batch, block=100)
        if not reply:
            continue
        rows = [json.loads(f[b"data"]) for _, f in reply[0][1]]
        frame = pd.DataFrame.from_records(rows)
        if latency:
            lat.extend((time.time() - frame["t"]).tolist())
        got += len(frame)
    return time.perf_counter() - t0, lat


def stage_total(fk: Any, name: str) -> int:
    return int(sum(i.get("totals", {}).get("events_in", 0) for i in fk.api.call("infos", name)))


def fusion_throughput(fk: Any, url: str, stream: str, n: int, batch: int) -> float:
    src = fk.sources.redis(url, stream=stream, group="fk")
    fk.stream("bench", source=src, batch_size=batch, paused=True)
    t0 = time.perf_counter()
    fk.resume("bench")
    while stage_total(fk, "bench") < n:
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    fk.stop("bench")
    return seconds


def stamp_latency(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(lat=time.time() - df["t"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.events, args.seconds = 50_000, 4.0
    if shutil.which("redis-server") is None:
        sys.exit("needs redis-server on the PATH")

    import redis

    import fusionkit as fk

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no",
                               "--dir", tempfile.mkdtemp()], stdout=subprocess.DEVNULL)
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    fk.connect()
    rows: list[dict[str, Any]] = []
    try:
        # -- throughput -------------------------------------------------------------------
        prefill(client, "tp", args.events)
        for b in (BATCH, 2000):
            secs, _ = plain_loop(client, "tp", args.events, b)
            client.xgroup_destroy("tp", "plain")
            rows.append({"what": "throughput", "reader": "redis-py loop", "batch": b,
                         "events": args.events, "events_per_s": args.events / secs})
            secs = fusion_throughput(fk, url, "tp", args.events, b)
            client.xgroup_destroy("tp", "fk")
            rows.append({"what": "throughput", "reader": "fusionkit stream", "batch": b,
                         "events": args.events, "events_per_s": args.events / secs})
        # -- latency at a steady rate -----------------------------------------------------
        n = int(args.rate * args.seconds)
        prod = subprocess.Popen([sys.executable, __file__, "--produce", url, "lat-plain",
                                 str(args.rate), str(args.seconds)])
        _, lat = plain_loop(client, "lat-plain", n, BATCH, latency=True)
        prod.wait()
        rows.append({"what": "latency", "reader": "redis-py loop", "batch": BATCH,
                     "events": n, "rate": args.rate, **summary_ms(lat)})
        src = fk.sources.redis(url, stream="lat-fk", group="fk")
        fk.stream("bench", source=src, fn=stamp_latency, batch_size=BATCH,
                  operators=[fk.sinks.redis(url, stream="lat-out", columns=["lat"])])
        prod = subprocess.Popen([sys.executable, __file__, "--produce", url, "lat-fk",
                                 str(args.rate), str(args.seconds)])
        prod.wait()
        while client.xlen("lat-out") < n:
            time.sleep(0.05)
        fk.stop("bench")
        lat = [json.loads(f[b"data"])["lat"] for _, f in client.xrange("lat-out")]
        rows.append({"what": "latency", "reader": "fusionkit stream", "batch": BATCH,
                     "events": n, "rate": args.rate, **summary_ms(lat)})
    finally:
        fk.shutdown()
        server.terminate()
        server.wait()

    print(table([r for r in rows if r["what"] == "throughput"],
                ["reader", "batch", "events", "events_per_s"]))
    print()
    print(table([r for r in rows if r["what"] == "latency"],
                ["reader", "rate", "events", "p50_ms", "p90_ms", "p99_ms", "max_ms"]))
    tp = {(r["reader"], r["batch"]): r["events_per_s"] for r in rows if r["what"] == "throughput"}
    ratio = {b: tp[("fusionkit stream", b)] / tp[("redis-py loop", b)] for b in (BATCH, 2000)}
    result = {"benchmark": "sources", "broker": "redis", "machine": machine(),
              "rows": rows, "fusionkit_vs_plain_throughput": ratio,
              "notes": "kafka: not measured (see the Kafka note in the issue report)"}
    print("\nwrote", write_result("sources", result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        produce_paced(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    else:
        main()
