"""The storage folder on a real local Ray: an unreadable latest checkpoint is skipped for the
previous one (said in an event), and a folder written under another key is refused."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import wait_for

from fusionkit.errors import StorageKeyError
from fusionkit.training.learners import Prediction

N_EVENTS = 30_000


class OffsetCounter:
    """A learner that counts how often it learned each event offset (its whole state)."""

    task = "classification"

    def __init__(self, n: int):
        self.counts = np.zeros(n, dtype="int64")

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        np.add.at(self.counts, X["_offset"].to_numpy(), 1)

    def get_state(self) -> bytes:
        return pickle.dumps(self.counts)

    def set_state(self, state: bytes) -> None:
        self.counts = pickle.loads(state)


def seen(fk) -> int:
    return fk.api.call("infos", "count")[0].get("events_seen", 0)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(fk, tmp_path):
    """Two checkpoints, the trainer's file of the newer one damaged, the trainer killed: the
    recovery says it skipped the newer one, restores the older one, and every event is
    still learned exactly once. Checkpoints are taken only when asked here
    (``checkpoint_every=None``), so the damaged one is certainly the latest."""
    import ray

    session = fk.connect().storage
    fk.shutdown()
    storage = tmp_path / "storage"
    try:
        fk.connect(storage=str(storage), checkpoint_every=None)
        src = fk.sources.synthetic("clicks", rate=4_000, seed=7, max_events=N_EVENTS)
        fk.stream("clicks", source=src, batch_size=500, paused=True)
        fk.train("count", on="clicks", label="clicked", model=OffsetCounter(N_EVENTS),
                 publish_every=None)
        fk.resume("clicks")
        wait_for(lambda: seen(fk) >= N_EVENTS // 5, timeout=60, what="a fifth learned")
        older = fk.checkpoint()
        wait_for(lambda: seen(fk) >= N_EVENTS // 3, timeout=60, what="a third learned")
        newer = fk.checkpoint()
        assert older is not None and newer is not None and newer > older

        state = storage / "checkpoints" / f"ckpt-{newer:06d}" / "count.train0.bin"
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
        os.kill(fk.api.call("infos", "count")[0]["pid"], signal.SIGKILL)

        wait_for(lambda: len(fk.recoveries()) > 0, timeout=90, what="a recovery")
        assert fk.recoveries().iloc[-1]["checkpoint"] == older
        events = wait_for(lambda: [e for e in fk.events().to_dict("records")
                                   if e["kind"] == "checkpoint fallback"],
                          timeout=30, what="the fallback event")
        assert len(events) == 1
        detail = events[0]["detail"]
        assert detail.startswith(f"checkpoint {newer} could not be loaded (")
        assert detail.endswith(f"; recovering from checkpoint {older}")
        assert "count.train0.bin is corrupt" in detail

        wait_for(lambda: seen(fk) >= N_EVENTS, timeout=120, what="every event learned")
        version = fk.publish("count")
        registry = fk.api.handles()["registry"]
        counts = pickle.loads(ray.get(registry.state.remote("count", version)))
        assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    finally:
        fk.shutdown()
        fk.connect(storage=session)


def test_storage_of_another_key_is_refused_at_connect(fk, monkeypatch):
    """The session's folder was written with the key file's key: connecting to it with
    another ``FUSIONKIT_SECRET`` fails with one sentence, and leaves no Ray behind, so
    connecting again with the right key works."""
    import ray

    session = fk.connect().storage
    fk.shutdown()
    try:
        monkeypatch.setenv("FUSIONKIT_SECRET", "not the key this folder was written with")
        with pytest.raises(StorageKeyError) as err:
            fk.connect(storage=session)
        message = str(err.value)
        assert message.startswith(f"the storage folder {session} was written with a different "
                                  f"fusionkit secret (key id ")
        assert message.endswith("set FUSIONKIT_SECRET to that key or use another storage folder")
        assert not ray.is_initialized()
        assert not list(Path(session).glob("**/*.tmp"))
    finally:
        monkeypatch.delenv("FUSIONKIT_SECRET", raising=False)
        fk.shutdown()
        fk.connect(storage=session)
    assert fk.status().empty
