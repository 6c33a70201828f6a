"""fk.restore after a full cluster restart: the pipeline goes on from its checkpoint."""

from __future__ import annotations

from _pipelines import OffsetCounter, events_seen, model_state
from conftest import wait_for

N_EVENTS = 30_000


def test_restore_after_full_restart(fk):
    """Run a bounded stream into a counting learner, checkpoint mid-way, shut the cluster
    down, connect again with the same storage and restore: every event is learned exactly
    once across the two runs, the source resumes at the checkpointed offset and the
    registry keeps the versions of the first run."""
    storage = fk.connect().storage
    src = fk.sources.synthetic("clicks", rate=4_000, seed=11, max_events=N_EVENTS)
    fk.stream("clicks", source=src, batch_size=500)
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(N_EVENTS),
             publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= N_EVENTS // 4, timeout=60,
             what="a quarter learned")
    first_version = fk.publish("count")
    k = fk.checkpoint()
    assert k is not None
    fk.shutdown()

    fk.connect(storage=storage)
    assert fk.status().empty  # a new cluster: nothing runs until restored
    out = fk.restore()
    assert out["checkpoint"] == k
    assert 0 < out["offsets"]["clicks"] < N_EVENTS
    assert set(out["stages"]) == {"clicks", "count"}
    wait_for(lambda: events_seen(fk, "count") >= N_EVENTS, timeout=120,
             what="every event learned after restore")
    assert first_version in set(fk.models("count")["version"])
    version = fk.publish("count")
    assert version > first_version
    counts = model_state(fk, "count", version)
    assert counts.sum() == N_EVENTS, f"learned {counts.sum()} events, produced {N_EVENTS}"
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert fk.status().loc["clicks", "status"] in ("running", "finished")


def test_restore_without_checkpoint_is_a_clear_error(fk, tmp_path):
    import pytest

    with pytest.raises(fk.FusionError, match="no complete checkpoint"):
        fk.restore(tmp_path)
