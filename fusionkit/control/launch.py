"""Starting stages from table entries: a checkpoint being restored, a pipeline relaunched.

``launch`` creates the stages of a pipeline on fresh hosts, each actor with its state from a
checkpoint; ``find_checkpoint`` and ``load_checkpoint`` find what ``restore()`` was asked
for (one checkpoint folder, a checkpoints folder or a storage folder) and read its states
and the stage table it holds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from fusionkit import _signing
from fusionkit.control.checkpoints import TABLE_FILE
from fusionkit.control.placement import host_options, placement
from fusionkit.control.pool import HostPool
from fusionkit.control.table import (
    StageRecord,
    StageTable,
    join_assignments,
    stream_assignments,
    table_assignments,
    train_assignment,
)
from fusionkit.errors import FusionError
from fusionkit.runtime.checkpoint import CheckpointStore
from fusionkit.runtime.specs import TRAIN_SLOT
from fusionkit.sources.base import later
from fusionkit.streaming.worker import OPS


def launch(entries: list[dict[str, Any]], states: dict, stages: StageTable, pool: HostPool,
           monitor: Any, registry: Any) -> None:
    """Create stream, train, join and table stages from table entries on fresh hosts, each
    actor with its state from a checkpoint (``states``), keeping their generations (so that
    checkpoint stays usable for a later recovery); then start them, downstream first."""
    streams = [e for e in entries if e["kind"] == "stream"]
    trains = [e for e in entries if e["kind"] == "train"]
    joins = [e for e in entries if e["kind"] == "join"]
    tables = [e for e in entries if e["kind"] == "table"]
    size = {e["name"]: 1 if e["kind"] == "train" else len(e["spec"].slots())
            for e in streams + trains + joins + tables}
    # start every missing host at once, not one stage after another: the pool's for the
    # stages without placement hints, hosts with their hints for the others
    placed = {e["name"]: placement(e["spec"]) for e in streams + trains + joins + tables}
    fresh = {n: [pool.host(o) for o in host_options(opts, size[n])]
             for n, opts in placed.items() if opts}
    pool.reserve(sum(size[n] for n, opts in placed.items() if not opts))
    for e in streams:
        spec = e["spec"]
        assignments = stream_assignments(spec, monitor,
                                         {s: states.get((spec.name, s)) for s in spec.slots()})
        hosts = pool.hosts(assignments, placed[spec.name], fresh.get(spec.name))
        source, actors = (None, hosts) if spec.fused else (hosts[0], hosts[1:])
        stages[spec.name] = StageRecord(
            spec.name, "stream", spec, actors, source, e["generation"], sample=e.get("sample"),
            extra={"restarts": e.get("extra", {}).get("restarts", 0)})
    for e in trains:
        spec = e["spec"]
        assignment = train_assignment(spec, monitor, registry, states.get((spec.name, TRAIN_SLOT)))
        (actor,) = pool.hosts([assignment], placed[spec.name], fresh.get(spec.name))
        ray.get(registry.register.remote(spec.name, spec.keep, spec.guard))
        stages[spec.name] = StageRecord(
            spec.name, "train", spec, [actor], None, e["generation"],
            extra={"restarts": e.get("extra", {}).get("restarts", 0)})
    for e in joins + tables:
        spec = e["spec"]
        make = join_assignments if e["kind"] == "join" else table_assignments
        assignments = make(spec, monitor, {s: states.get((spec.name, s)) for s in spec.slots()})
        actors = pool.hosts(assignments, placed[spec.name], fresh.get(spec.name))
        stages[spec.name] = StageRecord(
            spec.name, e["kind"], spec, actors, None, e["generation"], sample=e.get("sample"),
            extra={"restarts": e.get("extra", {}).get("restarts", 0)})
    stages.generation = max([stages.generation, *(e["generation"] for e in entries)])
    ray.get([stages[e["name"]].actors[0].start.remote() for e in trains])
    ray.get([a.start.remote() for e in tables for a in stages[e["name"]].actors])
    for e in joins:
        rec = stages[e["name"]]
        stages.rewire(rec.name)
        ray.get([a.start.remote(stages.downstream_targets(rec.name)) for a in rec.actors])
    for e in streams:
        rec = stages[e["name"]]
        targets = stages.downstream_targets(rec.name)
        stages.rewire(rec.name)
        ray.get([a.start.remote(targets) for a in rec.actors])  # fused: starts reading
        if rec.source is not None:
            ray.get(rec.source.start.remote({OPS: rec.actors}))


def find_checkpoint(store: CheckpointStore | None, path: str | None) -> tuple[Path, int]:
    """The folder and id of the checkpoint ``path`` names: the newest complete one of this
    storage (no path), the one of a ``ckpt-NNNNNN`` folder, or the newest of a checkpoints
    or storage folder."""
    if path is None:
        k = store.latest() if store is not None else None
        if k is None:
            where = store.folder if store is not None else "(no storage)"
            raise FusionError(f"there is no complete checkpoint under {where}")
        return store.folder, k
    p = Path(path).expanduser()
    if (p / "MANIFEST.json").is_file() and p.name.startswith("ckpt-"):
        return p.parent, int(p.name.split("-")[1])
    for folder in (p / "checkpoints", p):
        k = CheckpointStore(folder).latest()
        if k is not None:
            return folder, k
    raise FusionError(f"there is no complete checkpoint in {p} (a checkpoint folder "
                      f"ckpt-NNNNNN, a checkpoints folder or a storage folder)")


def load_checkpoint(folder: Path, k: int, path: str | None,
                    report_fallback: Callable[[str, int | None, list], None]
                    ) -> tuple[CheckpointStore, int, dict, list[dict[str, Any]]]:
    """The store, id, states and stage table entries of the checkpoint to restore: the one
    named, or (a folder given) the newest one that loads, the ones skipped reported."""
    store = CheckpointStore(folder)
    if path is None or not Path(path).expanduser().name.startswith("ckpt-"):
        # not one named checkpoint: the newest one that loads
        k, states, skipped = store.load_newest(k)
        if k is None:
            raise FusionError(f"no checkpoint under {folder} could be loaded: "
                              + "; ".join(why for _, why in skipped))
        report_fallback("(restore)", k, skipped)
    else:
        states = store.load(k)
    blob = store.blob(k, TABLE_FILE)
    if blob is None:
        raise FusionError(f"checkpoint {store._dir(k)} holds no stage table "
                          f"(taken by an earlier fusionkit); it cannot be restored")
    return store, k, states, _signing.loads(blob, str(store._dir(k) / TABLE_FILE))["stages"]


def offsets(states: dict) -> dict[str, Any]:
    """Where each stream's readers start again: the latest position of its reading slots."""
    out: dict[str, Any] = {}
    for (stage, slot), st in states.items():
        if slot.startswith(("fused", "source")) and isinstance(st, dict):
            out[stage] = later(out.get(stage), st.get("offset"))
    return out
