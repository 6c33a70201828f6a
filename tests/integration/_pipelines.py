"""What the integration tests share: counting learners, reading a stage's progress and
learned state, a real redis-server, a free loopback port, ending a process session.

The learners travel to Ray actors. Workers cannot import this folder (their path is
fusionkit's worker path, see tests/conftest.py), so this module registers itself with
cloudpickle to travel by value, as the test modules do; a scenario script run by
test_cluster.py imports it too and its learners reach every node the same way.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import ray.cloudpickle

from fusionkit.training.protocol import Prediction

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCHEMA = {"i": "integer", "x": "number", "y": "integer"}  # the events the tests write


# -- learners ---------------------------------------------------------------------------------
class _Counts:
    """A learner that counts how often it learned each value ``0..n-1`` of the column
    ``key`` (its whole state): a test reads it to see every event learned exactly once."""

    task = "classification"
    key = ""

    def __init__(self, n: int):
        self.counts = np.zeros(n, dtype="int64")

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        np.add.at(self.counts, X[self.key].to_numpy(dtype="int64"), 1)

    def get_state(self) -> bytes:
        return pickle.dumps(self.counts)

    def set_state(self, state: bytes) -> None:
        self.counts = pickle.loads(state)


class EventCounter(_Counts):
    """Counts how often it learned each event number ``i`` (the events the tests write)."""

    key = "i"


class OffsetCounter(_Counts):
    """Counts how often it learned each event offset (a source's ``_offset``)."""

    key = "_offset"


# -- a stage's progress and state ----------------------------------------------------------------
def events_seen(fk, name: str) -> int:
    """How many events the (first) actor of stage ``name`` has processed."""
    return int(fk.infos(name)[0].get("events_seen", 0))


def model_state(fk, name: str, version: int):
    """The learner state of version ``version`` of model ``name``, from the registry."""
    registry = fk.api.handles()["registry"]
    return pickle.loads(ray.get(registry.state.remote(name, version)))


def learned_counts(fk, name: str) -> np.ndarray:
    """A counting learner's state: publish a version of train stage ``name`` now and load it."""
    return model_state(fk, name, fk.publish(name))


# -- processes ----------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_session(sid: int, grace: float = 5.0) -> int:
    """End every process of process session ``sid`` (a Ray started inside it), SIGTERM then,
    after ``grace`` seconds, SIGKILL; return how many there were."""
    procs = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) == sid:
                procs.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    return len(procs)


class RedisServer:
    """A redis-server process on 127.0.0.1 with an append-only file, so data survives a
    restart on the same port."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        from conftest import wait_for  # here: a scenario script has no tests/ on its path

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
             "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        wait_for(lambda: self._ping(client), timeout=20, what="redis-server to answer")
        client.close()
        return self

    @staticmethod
    def _ping(client) -> bool:
        import redis

        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown flushes the AOF
            self.proc.wait(timeout=30)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)

