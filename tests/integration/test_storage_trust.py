"""The storage folder on a real local Ray: an unreadable latest checkpoint is skipped for the
previous one (said in an event), and a folder written under another key is refused."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from _pipelines import EventCounter, OffsetCounter, events_seen, learned_counts
from conftest import wait_for

from fusionkit.errors import StorageKeyError

N_EVENTS = 30_000


@pytest.fixture(scope="module")
def storage(fk_session, tmp_path_factory):
    """A Ray of this module's own that checkpoints only when asked (``checkpoint_every=None``),
    so the checkpoint a test damages is certainly the latest; the session's is back after."""
    import fusionkit as fk

    session = fk.connect().storage
    fk.shutdown()
    folder = tmp_path_factory.mktemp("trust") / "storage"
    fk.connect(storage=str(folder), checkpoint_every=None)
    yield folder
    fk.shutdown()
    fk.connect(storage=session)


def seen(fk) -> int:
    return events_seen(fk, "count")


def learned(fk) -> np.ndarray:
    return learned_counts(fk, "count")


def damage_latest_and_kill_the_trainer(fk, storage: Path, older: int, newer: int) -> None:
    """Flip a byte of the trainer's file in checkpoint ``newer``, SIGKILL the trainer, and
    check the recovery: from ``older``, with one event saying why ``newer`` was skipped."""
    n_recoveries = len(fk.recoveries())
    state = storage / "checkpoints" / f"ckpt-{newer:06d}" / "count.train0.bin"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    os.kill(fk.infos("count")[0]["pid"], signal.SIGKILL)

    wait_for(lambda: len(fk.recoveries()) > n_recoveries, timeout=90, what="a recovery")
    assert fk.recoveries().iloc[-1]["checkpoint"] == older
    events = wait_for(lambda: [e for e in fk.events().to_dict("records")
                               if e["kind"] == "checkpoint fallback"
                               and e["detail"].startswith(f"checkpoint {newer} ")],
                      timeout=30, what="the fallback event")
    assert len(events) == 1
    detail = events[0]["detail"]
    assert detail.startswith(f"checkpoint {newer} could not be loaded (")
    assert detail.endswith(f"; recovering from checkpoint {older}")
    assert "count.train0.bin is corrupt" in detail


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(fk, storage):
    """Two checkpoints, the trainer's file of the newer one damaged, the trainer killed: the
    recovery says it skipped the newer one, restores the older one, and every event is
    still learned exactly once."""
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
    damage_latest_and_kill_the_trainer(fk, storage, older, newer)
    wait_for(lambda: seen(fk) >= N_EVENTS, timeout=120, what="every event learned")
    counts = learned(fk)
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_fallback_through_redis_loses_nothing(fk, storage, tmp_path):
    """Through Redis, whose source re-reads only entries not yet acknowledged (XACK): the
    entries between the older and the newer checkpoint are still pending when the newer one
    is skipped (a checkpoint's offsets are acknowledged once the next one completes), so
    they are learned again from the older one, and none is lost."""
    from _pipelines import RedisServer
    from test_redis_source import produce

    n, chunk = 6_000, 2_000
    server = RedisServer(tmp_path).start()
    try:
        client = server.client()
        schema = fk.Schema({"i": "integer", "x": "number", "y": "integer"})
        produce(client, "events", 0, chunk)
        fk.stream("events", source=fk.sources.redis(server.url, stream="events", schema=schema),
                  batch_size=500, paused=True)
        fk.train("count", on="events", label="y", model=EventCounter(n), publish_every=None)
        fk.resume("events")
        wait_for(lambda: seen(fk) >= chunk, timeout=90, what="the first chunk learned")
        older = fk.checkpoint()
        produce(client, "events", chunk, chunk)
        wait_for(lambda: seen(fk) >= 2 * chunk, timeout=90, what="the second chunk learned")
        newer = fk.checkpoint()
        assert older is not None and newer is not None and newer > older
        damage_latest_and_kill_the_trainer(fk, storage, older, newer)
        produce(client, "events", 2 * chunk, chunk)
        wait_for(lambda: seen(fk) >= n, timeout=120, what="every event learned")
        counts = learned(fk)
        assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    finally:
        server.stop()


def test_storage_of_another_key_is_refused_at_connect(fk, storage, monkeypatch):
    """The folder was written with the key file's key: connecting to it with another
    ``FUSIONKIT_SECRET`` fails with one sentence, and leaves no Ray behind, so connecting
    again with the right key works."""
    import ray

    fk.shutdown()
    try:
        monkeypatch.setenv("FUSIONKIT_SECRET", "not the key this folder was written with")
        with pytest.raises(StorageKeyError) as err:
            fk.connect(storage=str(storage))
        message = str(err.value)
        assert message.startswith(f"the storage folder {storage} was written with a different "
                                  f"fusionkit secret (key id ")
        assert message.endswith("set FUSIONKIT_SECRET to that key or use another storage folder")
        assert not ray.is_initialized()
    finally:
        monkeypatch.delenv("FUSIONKIT_SECRET", raising=False)
        fk.shutdown()
        fk.connect(storage=str(storage), checkpoint_every=None)
    assert fk.status().empty
