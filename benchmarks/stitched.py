"""A stitched online-learning pipeline, built the traditional way, for the freshness benchmark.

Three separate processes glued by a broker, a file and polling:

- ``stream``: paces the synthetic click source to a rate (the same pacing as fusionkit's
  stream stage: an event is due at ``start + k / rate``; a micro-batch is cut when 500 are
  due or the oldest has waited ``linger``), stamps each event's ingest time and appends the
  micro-batch to a Redis stream (one entry per micro-batch, Arrow IPC: per-event entries
  cost more Python time than the trainer has at 20k events/s).
- ``train``: reads the Redis stream (``XREAD BLOCK``), learns each micro-batch with the
  River model (test-then-train, scored with the same River metrics as fusionkit's train
  stage: accuracy and log loss, overall and over the last 1000 events), and every ``publish`` seconds pickles
  the model with its version to a temporary file and renames it over ``model.pkl``
  (atomic). It keeps the ingest times of the events each version newly learned and writes
  them to ``versions.pkl`` when stopped (SIGTERM).
- ``serve``: an HTTP server (Starlette on uvicorn) that checks ``model.pkl`` every ``poll``
  seconds and loads it when it changed; ``POST /predict`` answers ``{"rows": [...]}`` with
  the predictions and the version that made them, and notes when each version first
  answered (``GET /served``).

Run by ``benchmarks/freshness.py``: ``python benchmarks/stitched.py ROLE --help``. The feedback
loop's stitched baseline (``benchmarks/stitched_loop.py``) runs the same ``train`` (``--key``:
the Redis stream it reads, its joiner's examples) and ``serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

KEY = "events"
NUMERIC = ["price", "dwell", "age", "hour", "position"]


def make_model(name: str) -> Any:
    """The River models both pipelines learn: ``ctr`` (the demo's) or ``numeric`` (cheaper)."""
    from river import compose, linear_model, preprocessing

    if name == "ctr":
        from fusionkit.demo import ctr_model

        return ctr_model()
    if name == "numeric":
        return (compose.Select(*NUMERIC) | preprocessing.StandardScaler()
                | linear_model.LogisticRegression())
    raise ValueError(f"unknown model {name!r}: ctr or numeric")


def _redis(port: int):
    import redis

    return redis.Redis(host="127.0.0.1", port=port)


def _on_sigterm() -> threading.Event:
    """An event set when the process gets SIGTERM (each role stops, writing what it has)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def pack(df: pd.DataFrame) -> bytes:
    """A batch as one Arrow IPC stream (a Redis stream entry's value)."""
    sink = io.BytesIO()
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def unpack(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(data).read_pandas()


# -- stream ------------------------------------------------------------------------------
def run_stream(args: argparse.Namespace) -> None:
    from fusionkit.runtime.pacer import Pacer
    from fusionkit.sources.synthetic import Synthetic

    r = _redis(args.redis)
    src = Synthetic("clicks", rate=args.rate, seed=args.seed)
    src.open()
    stop = _on_sigterm()
    pacer = Pacer(args.rate, args.batch_size, args.linger)
    while not stop.is_set():
        n, ingest = pacer.take(stop)
        if n == 0:
            continue
        batch = src.read(n)
        pacer.consumed(len(batch))
        batch = batch.drop(columns=["_event_time", "_offset"])
        batch["_ingest_ts"] = ingest[: len(batch)]
        r.xadd(KEY, {"b": pack(batch)}, maxlen=10_000, approximate=True)


# -- train -------------------------------------------------------------------------------
class Trainer:
    """Learns micro-batches from Redis; saves the model to a file every ``publish`` seconds."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        from river import metrics, utils

        self.model = make_model(args.model)
        self.label_metrics = [metrics.Accuracy(), utils.Rolling(metrics.Accuracy(), 1000)]
        self.proba_metrics = [metrics.LogLoss(), utils.Rolling(metrics.LogLoss(), 1000)]
        self.version = 0
        self.pending: list[Any] = []
        self.versions: dict[int, Any] = {}   # version -> ingest times it newly learned
        self.folder = Path(args.folder)
        self.last = time.perf_counter()

    def learn(self, batch: pd.DataFrame) -> None:
        """Test then train, scoring the predictions as fusionkit's train stage does."""
        y = batch.pop("clicked")
        self.pending.append(batch.pop("_ingest_ts").to_numpy())
        if self.args.mini_batch:
            proba = self.model.predict_proba_many(batch)
            self.model.learn_many(batch, y)
            p_true = (proba[True] if True in proba.columns else pd.Series(0.0, index=y.index))
            self.score(y.tolist(), p_true.tolist())
            return
        cols = list(batch.columns)
        model, ps = self.model, []
        for values, label in zip(zip(*(batch[c].tolist() for c in cols), strict=True),
                                 y.tolist(), strict=True):
            x = dict(zip(cols, values, strict=True))
            ps.append(model.predict_proba_one(x).get(True, 0.0))
            model.learn_one(x, label)
        self.score(y.tolist(), ps)

    def score(self, ys: list[bool], p_true: list[float]) -> None:
        """Prequential accuracy and log loss, overall and over the last 1000 events."""
        for y, p in zip(ys, p_true, strict=True):
            for m in self.label_metrics:
                m.update(y, p >= 0.5)
            for m in self.proba_metrics:
                m.update(y, p)

    def maybe_publish(self) -> None:
        if not self.pending or time.perf_counter() - self.last < self.args.publish:
            return
        import numpy as np

        self.version += 1
        self.versions[self.version] = np.concatenate(self.pending)
        self.pending = []
        tmp = self.folder / f".model.{self.version}.tmp"
        tmp.write_bytes(pickle.dumps({"version": self.version, "model": self.model}))
        os.replace(tmp, self.folder / "model.pkl")
        self.last = time.perf_counter()

    def run(self) -> None:
        r = _redis(self.args.redis)
        stop = _on_sigterm()
        last_id = "$"
        while not stop.is_set():
            wait = max(1, int(1000 * (self.args.publish - (time.perf_counter() - self.last))))
            reply = r.xread({self.args.key: last_id}, count=100, block=min(wait, 100))
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    self.learn(unpack(fields[b"b"]))
                    self.maybe_publish()
            self.maybe_publish()
        (self.folder / "versions.pkl").write_bytes(pickle.dumps(self.versions))


# -- serve -------------------------------------------------------------------------------
def make_server(args: argparse.Namespace):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    path = Path(args.folder) / "model.pkl"
    state: dict[str, Any] = {"current": (None, None), "stamp": None, "served": {}}

    def reload() -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != state["stamp"]:
            saved = pickle.loads(path.read_bytes())
            state["current"] = (saved["version"], saved["model"])
            state["stamp"] = stamp

    async def follow() -> None:
        while True:
            reload()
            await asyncio.sleep(args.poll)

    async def predict(request: Request) -> JSONResponse:
        version, model = state["current"]
        if model is None:
            return JSONResponse({"error": "no model yet"}, status_code=503)
        rows = (await request.json())["rows"]
        probas = [model.predict_proba_one(row) for row in rows]
        state["served"].setdefault(version, time.time())
        return JSONResponse({"predictions": [max(p, key=p.get) if p else None for p in probas],
                             "proba": [p.get(True, 0.0) for p in probas], "version": version})

    async def served(request: Request) -> JSONResponse:
        return JSONResponse({str(k): v for k, v in state["served"].items()})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        task = asyncio.get_running_loop().create_task(follow())
        yield
        task.cancel()

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                             Route("/served", served)], lifespan=lifespan)


def run_serve(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(make_server(args), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    roles = parser.add_subparsers(dest="role", required=True)
    s = roles.add_parser("stream", help="paced source -> Redis stream")
    s.add_argument("--redis", type=int, required=True)
    s.add_argument("--rate", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=500)
    s.add_argument("--linger", type=float, default=0.01)
    t = roles.add_parser("train", help="Redis stream -> River -> model file")
    t.add_argument("--redis", type=int, required=True)
    t.add_argument("--folder", required=True)
    t.add_argument("--publish", type=float, required=True, help="seconds between saves")
    t.add_argument("--model", default="ctr")
    t.add_argument("--mini-batch", action="store_true")
    t.add_argument("--key", default=KEY, help=f"the Redis stream to learn (default {KEY!r})")
    v = roles.add_parser("serve", help="model file -> HTTP")
    v.add_argument("--folder", required=True)
    v.add_argument("--port", type=int, required=True)
    v.add_argument("--poll", type=float, required=True, help="seconds between mtime checks")
    args = parser.parse_args(argv)
    {"stream": run_stream, "train": lambda a: Trainer(a).run(), "serve": run_serve}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
