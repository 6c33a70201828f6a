"""Chaos: a stream -> train -> serve pipeline left running while its parts are killed.

For ``--minutes`` (default 10) a producer writes numbered events to a real Redis stream at
``--rate`` events/s, 1% of them poison (invalid JSON, ~200 KB of nested ``[``, a payload over
the source's size cap, random bytes, an event time of ``Infinity`` or a year ahead). A stream
stage reads them, a train stage learns them (a learner that counts how often it learned each
event number: its state, so it is checkpointed and restored with the stage), a serve stage of
two replicas answers HTTP requests from load processes of their own. Every ~20 s (jittered) a
random actor kind is killed with SIGKILL: the stream actor, the trainer, the registry, a
serve replica or the controller; once, half way, the Redis server is stopped and started
again on the same port (its append-only file keeps the stream).

At the end the producer stops and the run waits for every good event to be learned, then
prints and writes (benchmarks/results/chaos.json, or ``--out``): kills survived, events lost
(target 0), events learned twice (0), failed HTTP requests (0), poison messages
dead-lettered (100%), and the peak resident memory seen per actor kind (sampled every
second).

What would explain a failure is written too, every time on one clock (seconds from the
run's start): each failed HTTP request (status, exception or body, and the kills and
recoveries within 5 s of it), and each numbered poison message no dead letter holds (its
number, kind, Redis entry id, the kills and recoveries around when it was written, how
often its number was learned, and whether Redis still holds it, pending or acknowledged).

    python benchmarks/chaos.py [--minutes 10] [--rate 1000] [--seed 0] [--out chaos]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, machine, table, write_result  # noqa: E402
from serve_latency import Load  # noqa: E402

import fusionkit as fk  # noqa: E402
from fusionkit.training.protocol import Learner, Prediction, load_state  # noqa: E402

KINDS = ("stream", "train", "registry", "replica", "controller")


class EventCounter(Learner):
    """Counts how often each event number was learned (uint8: 1 byte an event, saturating);
    a ``Learner``, so its versions can be served as well as counted."""

    task = "classification"

    def __init__(self, n: int):
        self.counts = np.zeros(n, dtype="uint8")

    def predict(self, X):
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X, y):
        idx = X["i"].to_numpy(dtype="int64")
        np.add.at(self.counts, idx, 1)
        np.minimum(self.counts, 250, out=self.counts)


class RedisServer:
    """redis-server on 127.0.0.1 with an append-only file, restartable on the same port."""

    def __init__(self, folder: str):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", self.folder],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
            self.proc = None


BIG = {"deep nesting": 300, "oversized": 30}  # at most this many of the large kinds a run


NUMBERED = ("invalid json", "oversized", "infinite time", "future time")


def poison(rng: random.Random, i: int, sent: Counter[str]) -> tuple[str, bytes]:
    """One poison message, and its kind (the large kinds only up to ``BIG`` times, so the
    Redis server's memory stays that of the good events)."""
    kinds = ["invalid json", "random bytes", "infinite time", "future time",
             *(k for k, cap in BIG.items() if sent[k] < cap)]
    kind = rng.choice(kinds)
    if kind == "invalid json":
        return kind, b'{"i": ' + str(i).encode() + b", "
    if kind == "deep nesting":
        return kind, b"[" * 200_000
    if kind == "oversized":
        return kind, json.dumps({"i": i, "pad": "x" * 2_000_000}).encode()
    if kind == "random bytes":
        return kind, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
    ts = "Infinity" if kind == "infinite time" else str(time.time() + 365 * 86400)
    return kind, f'{{"i": {i}, "x": 1.0, "y": 0, "ts": {ts}}}'.encode()


class Producer(threading.Thread):
    """XADDs events 0, 1, 2, ... at ``rate``/s in batches of 1/20 s; poison in between; rides
    out a Redis restart or a server too loaded to answer in time. Each batch is one
    MULTI/EXEC transaction, all of it written or none: after an error the stream's tail says
    which (a batch written whose answer was lost is not written twice, which would read as
    events learned twice; one not written is written again)."""

    def __init__(self, url: str, rate: int, poison_share: float, seed: int, t0: float):
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.rate, self.share, self.rng = rate, poison_share, random.Random(seed)
        self.stop_event = threading.Event()
        self.good = 0
        self.bad: Counter[str] = Counter()
        # poison that carries its event number: which ones reach the dead letters (kind,
        # seconds from the run's start ``t0`` when written, Redis entry id)
        self.numbered: dict[int, tuple[str, float, str]] = {}
        self.t0 = t0

    def run(self) -> None:
        import redis

        step = max(1, self.rate // 20)
        t0 = time.perf_counter()
        while not self.stop_event.is_set():
            pipe = self.client.pipeline(transaction=True)
            bad: Counter[str] = Counter()
            numbered: dict[int, tuple[str, int]] = {}  # kind, place in the pipeline
            for k in range(step):
                i = self.good + k
                if self.rng.random() < self.share:
                    kind, raw = poison(self.rng, i, self.bad + bad)
                    bad[kind] += 1
                    if kind in NUMBERED:
                        numbered[i] = (kind, len(pipe))
                    pipe.xadd("events", {"data": raw})
                now = time.time()
                pipe.xadd("events", {"data": json.dumps({"i": i, "x": float(i % 7), "y": i % 2,
                                                         "ts": now})})
            n = len(pipe)  # the pipeline is emptied whatever execute() does
            try:
                ids = pipe.execute()
            except (redis.ConnectionError, redis.TimeoutError):
                ids = self.landed(n, self.good + step - 1)
                if ids is None:  # not written: write the same events again
                    continue
            self.good += step
            self.bad.update(bad)
            t = round(time.perf_counter() - self.t0, 1)
            self.numbered.update({i: (kind, t, ids[at].decode())
                                  for i, (kind, at) in numbered.items()})
            ahead = t0 + self.good / self.rate - time.perf_counter()
            if ahead > 0:
                self.stop_event.wait(ahead)

    def landed(self, n: int, last: int) -> list[bytes] | None:
        """After an error writing a batch of ``n`` entries ending with good event ``last``:
        its entry ids if it was written (the stream's last ``n`` entries, this producer being
        the only writer), else None. Waits for the server to answer."""
        import redis

        while True:
            try:
                tail = self.client.xrevrange("events", count=n)
                break
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.2)
        if not tail:
            return None
        try:
            newest = json.loads(tail[0][1][b"data"])
        except (ValueError, KeyError):
            return None
        if not isinstance(newest, dict) or newest.get("i") != last or len(tail) < n:
            return None
        return [entry_id for entry_id, _ in reversed(tail)]


def replica_pids(app: str) -> list[int]:
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ServeReplica" in cmd and f":{app}:" in cmd:
            pids.append(p.pid)
    return pids


def pids_by_kind() -> dict[str, list[int]]:
    import ray

    out: dict[str, list[int]] = {k: [] for k in KINDS}
    try:
        actors = fk.actors()
        out["stream"] = [int(p) for p in actors[actors["stage"] == "events"]["pid"].dropna()]
        out["train"] = [int(p) for p in actors[actors["stage"] == "count"]["pid"].dropna()]
        out["registry"] = [ray.get(fk.api.handles()["registry"].pid.remote(), timeout=10)]
        out["controller"] = [fk.controller_info().pid]
    except Exception:
        pass  # mid-recovery: take what the next sample finds
    out["replica"] = replica_pids("count-api")
    return out


class MemorySampler(threading.Thread):
    """Every second, the resident memory of each actor kind's processes; keeps the peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_mb: dict[str, float] = {k: 0.0 for k in KINDS}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            for kind, pids in pids_by_kind().items():
                for pid in pids:
                    try:
                        rss = psutil.Process(pid).memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.peak_mb[kind] = max(self.peak_mb[kind], round(rss, 1))


def learned_counts(timeout: float = 300.0) -> np.ndarray:
    """The counts of a version published now, through a restart of the registry or the
    trainer that the last kill may have left under way."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        try:
            version = fk.publish("count") or fk.live_version("count")
            registry = fk.api.handles()["registry"]
            state = ray.get(registry.state.remote("count", version), timeout=60)
            return load_state(state).counts
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def lettered_numbers(letters) -> Counter[int]:
    """How many dead letters hold each event number (a payload names it as JSON text or as
    a row's repr)."""
    import re

    found: Counter[int] = Counter()
    for payload in letters["payload"] if len(letters) else []:
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        m = re.search(r'["\']i["\']: (\d+)', text)  # JSON text, or a row's repr
        if m:
            found[int(m.group(1))] += 1
    return found


def runs_of(idx: np.ndarray, most: int = 20) -> list[list[int]]:
    """Event numbers as ``[first, last]`` runs of consecutive numbers (the first ``most``)."""
    out: list[list[int]] = []
    for i in idx[:100_000].tolist():
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        elif len(out) < most:
            out.append([i, i])
        else:
            break
    return out


def near(t: float, log: list[dict], key: str = "t", within: float = 5.0) -> list[dict]:
    """The entries of ``log`` (kills, recoveries) within ``within`` seconds of ``t``."""
    return [e for e in log if abs(e[key] - t) <= within]


def missing_poison(numbered: dict[int, tuple[str, float, str]], found: Counter[int]
                   ) -> list[dict]:
    """The numbered poison messages found in no dead letter's payload (event number, kind,
    seconds into the run when written, Redis entry id)."""
    return [{"i": i, "kind": kind, "t": t, "entry": entry}
            for i, (kind, t, entry) in sorted(numbered.items()) if i not in found]


def explain_poison(missing: list[dict], client, counts: np.ndarray, kills: list[dict],
                   recoveries: list[dict]) -> list[dict]:
    """What can be said of each poison message no dead letter holds: the kills and
    recoveries within 5 s of its writing, how often its number was learned (1: only the good
    event of that number; 2: the poison too), and what Redis says of its entry (still in the
    stream? delivered to the stage's group? pending, i.e. not acknowledged, for its one
    consumer: the stream stage has one actor and Redis streams no partitions)."""
    try:
        groups = {(g["name"].decode() if isinstance(g["name"], bytes) else g["name"]): g
                  for g in client.xinfo_groups("events")}
        group = groups.get("events", {})
        delivered = group.get("last-delivered-id", b"0-0")
        delivered = delivered.decode() if isinstance(delivered, bytes) else str(delivered)
    except Exception as exc:
        group, delivered = {"error": f"{type(exc).__name__}: {exc}"}, None

    def id_key(entry: str) -> tuple[int, int]:
        ms, seq = entry.split("-")
        return int(ms), int(seq)

    out = []
    for m in missing:
        row = {**m, "stage": "events", "actor": 0,
               "learned": int(counts[m["i"]]) if m["i"] < len(counts) else None,
               "kills_near": near(m["t"], kills), "recoveries_near": near(m["t"], recoveries)}
        try:
            row["in_stream"] = bool(client.xrange("events", m["entry"], m["entry"], count=1))
            pending = client.xpending_range("events", "events", m["entry"], m["entry"], 1)
            row["pending"] = [{"consumer": p["consumer"].decode(),
                               "deliveries": p["times_delivered"]} for p in pending]
            row["delivered_to_group"] = (delivered is not None
                                         and id_key(m["entry"]) <= id_key(delivered))
        except Exception as exc:
            row["redis_error"] = f"{type(exc).__name__}: {exc}"
        out.append(row)
    return out


def explain_http(loads, t0: float, kills: list[dict], recoveries: list[dict]) -> list[dict]:
    """Each HTTP request that did not answer 200: when (seconds from the run's start), how
    long it took, its status (-1: no answer, or not the JSON expected), what went wrong, and
    the kills and recoveries within 5 s of its start or its end."""
    out = []
    for n, load in enumerate(loads):
        for start, dt, status, detail in load.failures:
            t = round(start - t0, 2)
            out.append({"load": n, "t": t, "seconds": round(dt, 3), "status": status,
                        "detail": detail,
                        "kills_near": [k for k in kills if t - 5 <= k["t"] <= t + dt + 5],
                        "recoveries_near": [r for r in recoveries
                                            if t - 5 <= r["t"] <= t + dt + 5]})
    return sorted(out, key=lambda f: f["t"])


def settled_status():
    """``fk.status()`` once no actor is too busy to answer it (one that does not answer in
    time shows as failed, "actor unreachable", with no counts), or the last one in a minute."""
    for _ in range(20):
        status = fk.status()
        if not status["error"].fillna("").astype(str).str.contains("unreachable").any():
            break
        time.sleep(3.0)
    return status


def events_seen() -> int:
    """How many events the train stage has learned (its own count, restored with it); 0 while
    it has no actor answering (between a kill and its recovery)."""
    reports = fk.infos("count")
    return int(reports[0].get("events_seen", 0)) if reports else 0


def stream_state(end: int) -> dict:
    """The stream stage's actor as it reports itself: status, pid, and how many Redis
    offsets it still has to read before the end of the stream (``end``: past the last entry)."""
    info = fk.infos("events")[0]
    offset = info.get("offset")
    return {"status": info.get("status"), "pid": info.get("pid"),
            "behind": None if not isinstance(offset, int) else max(0, end - offset),
            "dead_letters": info.get("dead_letters")}


class CaughtUp:
    """True once the pipeline has really taken everything, twice in a row 2 s apart and at
    least 15 s after the last kill (Ray takes seconds to see a SIGKILL, and the rollback
    that follows sends the stream back to its checkpoint): every good event learned, the
    stream stage running and past the last entry of the Redis stream. Learned alone is not
    enough: a stream actor killed at the end is rolled back with the trainer, and until it
    has read its checkpoint's tail again its dead letters lack that tail's poison."""

    def __init__(self, good: int, end: int, last_kill: float):
        self.good, self.end, self.last_kill, self.since = good, end, last_kill, None

    def __call__(self) -> bool:
        st = stream_state(self.end)
        ok = (events_seen() >= self.good and st["status"] == "running" and st["behind"] == 0
              and time.perf_counter() >= self.last_kill + 15.0)
        if not ok:
            self.since = None
            return False
        self.since = self.since or time.perf_counter()
        return time.perf_counter() - self.since >= 2.0


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass  # an actor mid-restart
        time.sleep(0.5)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=1000, help="good events per second")
    parser.add_argument("--every", type=float, default=20.0, help="mean seconds between kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final-kill", choices=KINDS, default=None,
                        help="also kill one actor of this kind as soon as the producer stops "
                             "(the end of a run, while its last events are still read)")
    parser.add_argument("--out", default="chaos",
                        help="the result's name: benchmarks/results/<out>.json")
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("needs redis-server (apt-get install redis-server)")
    rng = random.Random(args.seed)
    folder = tempfile.mkdtemp(prefix="fusionkit-chaos-")
    server = RedisServer(folder)
    server.start()
    capacity = int(args.rate * args.minutes * 60 * 1.2) + 100_000

    try:
        fk.connect()
    except BaseException:  # no Ray (a machine too loaded to start one): no Redis left behind
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    schema = fk.Schema({"i": "integer", "x": "number", "y": "integer", "ts": "number"})
    src = fk.sources.redis(server.url, stream="events", schema=schema, time_field="ts")
    fk.stream("events", source=src, batch_size=500, paused=True)
    fk.train("count", on="events", label="y", features=["x"], model=EventCounter(capacity),
             publish_every="2s")
    fk.resume("events")
    port = free_port()
    fk.serve("count-api", model="count", replicas=2, port=port)
    url = f"http://127.0.0.1:{port}/count-api"
    t0, wall0 = time.perf_counter(), time.time()  # the run's clock: kills, requests, poison
    producer = Producer(server.url, args.rate, 0.01, args.seed, t0)
    sampler = MemorySampler()
    producer.start()
    sampler.start()
    loads = [Load(url, [{"i": 1, "x": 1.0, "ts": 0.0}]) for _ in range(2)]
    for load in loads:
        load.start()

    kills: list[dict] = []
    t_end = time.monotonic() + args.minutes * 60
    redis_restart_at = time.monotonic() + args.minutes * 30
    restarted_redis = False
    print(f"chaos for {args.minutes} min at {args.rate} events/s, a kill every ~{args.every} s",
          flush=True)

    def kill(kind: str, pid: int) -> None:
        try:  # which process it is: a replica of the model or of the retrying front
            what = " ".join(psutil.Process(pid).cmdline()).strip()[:80]
        except psutil.Error:
            what = None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        kills.append({"t": round(time.perf_counter() - t0, 1), "kind": kind, "pid": pid,
                      "process": what})
        print(f"killed {kind} (pid {pid}); produced {producer.good}", flush=True)

    while time.monotonic() < t_end:
        time.sleep(rng.uniform(0.5, 1.5) * args.every)
        if not restarted_redis and time.monotonic() >= redis_restart_at:
            server.stop()
            time.sleep(3.0)
            server.start()
            restarted_redis = True
            kills.append({"t": round(time.perf_counter() - t0, 1), "kind": "redis-server",
                          "pid": None})
            print("restarted redis-server", flush=True)
            continue
        kind = rng.choice(KINDS)
        pids = pids_by_kind()[kind]
        if pids:
            kill(kind, rng.choice(pids))

    producer.stop_event.set()
    producer.join()
    if args.final_kill:
        pids = pids_by_kind()[args.final_kill]
        if pids:
            kill(args.final_kill, rng.choice(pids))
    good = producer.good
    print(f"producer stopped at {good} good events; waiting for every one to be learned",
          flush=True)
    from fusionkit.sources._redis import id_to_offset

    last = producer.client.xrevrange("events", count=1)
    end = id_to_offset(last[0][0]) + 1 if last else 0
    learned = wait(lambda: events_seen() >= good, timeout=600)
    # what a read as soon as every good event is learned finds (the check chaos.py made
    # before): kept to compare with the read once the stream has caught up
    # (the first time the stream actor answers, as the old read waited for it to answer)
    early: dict = {"t": round(time.perf_counter() - t0, 1), "errors": []}
    for _ in range(30):
        try:
            early["stream"] = stream_state(end)
            early_found = lettered_numbers(fk.dead_letters("events"))
            early["missing"] = [m["i"] for m in missing_poison(producer.numbered, early_found)]
            early["read_t"] = round(time.perf_counter() - t0, 1)
            break
        except Exception as exc:
            early["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            time.sleep(2.0)
    last_kill = t0 + max((k["t"] for k in kills), default=0.0)
    drained = learned and wait(CaughtUp(good, end, last_kill), timeout=300)
    caught_up_t = round(time.perf_counter() - t0, 1)
    if not drained:  # say where it stands, for whoever reads the run
        for what in (lambda: f"not drained: learned {events_seen()} of {good}",
                     lambda: f"stream: {stream_state(end)}",
                     lambda: fk.status().to_string(), lambda: fk.infos("count"),
                     lambda: fk.infos("events"), lambda: fk.recoveries().tail(10).to_string(),
                     lambda: fk.events().tail(30).to_string()):
            try:
                print(what(), flush=True)
            except Exception as exc:  # whatever it is, the rest is still worth printing
                print(f"({type(exc).__name__}: {exc})", flush=True)
    for load in loads:
        load.stop_event.set()
    for load in loads:
        load.join(timeout=30)
    sampler.stop_event.set()
    counts = learned_counts()[:good].astype("int64")
    status = settled_status()
    dead = int(status.loc["events", "dead_letters"])
    letters = fk.dead_letters("events")
    requests = sum(len(load.records) for load in loads)
    failed = sum(1 for load in loads for r in load.records if r[2] != 200)
    poison_sent = sum(producer.bad.values())
    recoveries = [{"t": round(r.detected - wall0, 1), "stage": r.stage,
                   "checkpoint": None if r.checkpoint != r.checkpoint else r.checkpoint,
                   "seconds": round(r.seconds, 1)}
                  for r in fk.recoveries().itertuples()]
    found = lettered_numbers(letters)
    missing = missing_poison(producer.numbered, found)
    try:
        stream_info = fk.infos("events")[0]
        dropped = int(stream_info.get("dead_letters_dropped", 0))
    except Exception as exc:
        dropped = f"{type(exc).__name__}: {exc}"
    poison_detail = explain_poison(missing, producer.client, counts, kills, recoveries)
    http_detail = explain_http(loads, t0, kills, recoveries)
    try:  # the pipeline's own events, but versions: failures, recoveries, source retries
        ev = fk.events()
        ev = ev[ev["kind"] != "version"]
        events_log = [{"t": round(float(e.time) - wall0, 1), "stage": e.stage, "kind": e.kind,
                       "detail": str(e.detail)[:300]} for e in ev.itertuples()]
    except Exception as exc:
        events_log = [{"error": f"{type(exc).__name__}: {exc}"}]
    result = {
        "minutes": args.minutes, "rate": args.rate, "seed": args.seed,
        "kills": len(kills), "kills_by_kind": dict(Counter(k["kind"] for k in kills)),
        "recoveries": len(fk.recoveries()),
        "drained": drained, "caught_up_t": caught_up_t, "early_read": early,
        "good_events": good, "events_lost": int((counts == 0).sum()),
        "learned_twice": int((counts > 1).sum()),
        "lost_runs": runs_of(np.flatnonzero(counts == 0)),
        "twice_runs": runs_of(np.flatnonzero(counts > 1)),
        "http_requests": requests, "http_failed": failed,
        # the retrying front's own replicas are the limit of its retry (see HttpFront): a
        # request held by one killed fails with the proxy's 500; counted apart, not hidden
        "http_failed_at_a_front_kill": sum(
            1 for f in http_detail
            if any("-http" in (k.get("process") or "") for k in f["kills_near"])),
        "poison_sent": poison_sent, "poison_by_kind": dict(producer.bad),
        "dead_lettered": dead,
        "dead_lettered_pct": round(100.0 * dead / poison_sent, 1) if poison_sent else None,
        "dead_letter_reasons": dict(Counter(letters["reason"].str.split(":").str[0]))
        if len(letters) else {},
        "peak_rss_mb": sampler.peak_mb,
        "stage_status": {name: row["status"] for name, row in status.iterrows()},
        "stage_errors": {name: row["error"] for name, row in status.iterrows() if row["error"]},
        "dead_letters_listed": len(letters), "dead_letters_dropped": dropped,
        "numbered_poison": len(producer.numbered),
        "numbered_lettered_twice": sum(1 for i in producer.numbered if found[i] > 1),
        "shed": int(status.loc["events", "shed"]), "late": int(status.loc["events", "late"]),
        "poison_not_dead_lettered": poison_detail,
        "http_failures": http_detail,
        "kill_log": kills, "recoveries_log": recoveries,
        "events_log": events_log,
    }
    fk.shutdown()
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)
    print()
    print(table([{"kind": k, "peak_rss_mb": v} for k, v in sampler.peak_mb.items()],
                ["kind", "peak_rss_mb"]))
    print(json.dumps({k: v for k, v in result.items()
                      if k not in ("kill_log", "recoveries_log", "poison_not_dead_lettered",
                                   "http_failures", "events_log")}, indent=1))
    print(f"kills: {kills}")
    print(f"recoveries: {recoveries}")
    print(f"pipeline events (not versions): {events_log}")
    for what, rows in (("failed HTTP requests", http_detail),
                       ("poison messages not dead-lettered", poison_detail)):
        print(f"{what}: {len(rows)}")
        for row in rows:
            print("  " + json.dumps(row, default=str))
    path = write_result(args.out, {"machine": machine(), **result})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
