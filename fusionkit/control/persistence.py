"""The controller's stage table on disk: how it survives its own death.

The table (every stage's spec, generation and host names; the epoch, checkpoint ids and
recoveries) is written atomically to ``<storage>/controller/stages.pkl`` on every define,
stop, pause, resume, recovery and checkpoint, pickled with cloudpickle (specs hold notebook
classes) and signed. A controller Ray restarted reads it back and adopts its stage hosts by
name (they are detached, so they outlived it); every checkpoint holds a copy too, so
``restore()`` can start the pipeline from it. Recoveries are kept as
:class:`~fusionkit.runtime.records.Recovery` records; a table of an older version holds them
as dicts, read back as records.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import ray
import ray.cloudpickle

from fusionkit import _signing
from fusionkit._files import write_atomic
from fusionkit.control.checkpoints import TABLE_FILE
from fusionkit.control.pool import HostPool, aid
from fusionkit.control.table import StageRecord, StageTable, assignments_of
from fusionkit.runtime.records import Recovery

log = logging.getLogger("fusionkit")
KEPT_EXTRA = ("restarts", "url", "route")  # what a stage's entry keeps of its record's extra
KEPT_RECOVERIES = 100


def entry(rec: StageRecord, pool: HostPool) -> dict[str, Any]:
    """A stage's entry in the table: its record, its hosts by name."""
    return {"name": rec.name, "kind": rec.kind, "spec": rec.spec,
            "generation": rec.generation, "created": rec.created, "sample": rec.sample,
            "extra": {k: v for k, v in rec.extra.items() if k in KEPT_EXTRA},
            "hosts": [pool.name_of(a) for a in rec.actors],
            "source": pool.name_of(rec.source) if rec.source is not None else None}


def table(stages: StageTable, pool: HostPool, saved: dict[str, Any], restarts: int,
          recoveries: list[Recovery], only: set[str] | None = None) -> dict[str, Any]:
    """The whole table (or only the stages named in ``only``, as a checkpoint keeps it);
    ``saved``: what the checkpoint coordinator keeps (``CheckpointCoordinator.saved``)."""
    return {"version": 1, "generation": stages.generation, **saved,
            "restarts": restarts, "recoveries": list(recoveries)[-KEPT_RECOVERIES:],
            "stages": [entry(r, pool) for r in list(stages.values())
                       if only is None or r.name in only]}


class TableFile:
    """Where the table is written (None: no storage, nothing is), and why it last could not
    be (``error``)."""

    def __init__(self, storage: str | None):
        self.path = Path(storage) / "controller" / TABLE_FILE if storage else None
        self.error: str | None = None
        self._lock = threading.Lock()

    def dumps(self, content: dict[str, Any]) -> bytes | None:
        """The table pickled (cloudpickle: specs hold notebook classes) and signed."""
        try:
            blob = _signing.dumps(content, pickler=ray.cloudpickle)
        except Exception as exc:  # a spec that cannot be pickled: the pipeline still runs
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("fusionkit: the stage table could not be saved: %s", self.error)
            return None
        self.error = None
        return blob

    def write(self, content: Any) -> None:
        """Write the table atomically; ``content`` is called for it under the file's lock,
        so two writers never save an older table over a newer one."""
        if self.path is None:
            return
        with self._lock:
            blob = self.dumps(content())
            if blob is not None:
                write_atomic(self.path, blob)

    def read(self) -> dict[str, Any] | None:
        """The table a controller that died wrote (None: none, or unreadable); its
        recoveries as records, also those an older version saved as dicts."""
        if self.path is None or not self.path.exists():
            return None
        try:
            saved = _signing.loads(self.path.read_bytes(), str(self.path))
            saved["recoveries"] = [Recovery.of(r) for r in saved.get("recoveries", [])]
            return saved
        except Exception as exc:
            log.warning("fusionkit: the stage table %s could not be read: %s", self.path, exc)
            return None


def adopt(saved: dict[str, Any] | None, stages: StageTable, pool: HostPool, monitor: Any,
          registry: Any) -> list[str]:
    """Put the stages of a table read back into ``stages``, with their actors found by name
    (the pool remembers what each became). Returns the stages whose actors are gone (their
    pipelines start again from the last checkpoint); every other stage host is ended."""
    if saved is None:
        pool.kill_orphans(keep=set())
        return []
    stages.generation = saved["generation"]
    lost, keep = [], set()
    for e in saved["stages"]:
        rec = StageRecord(e["name"], e["kind"], e["spec"], generation=e["generation"],
                          created=e["created"], sample=e.get("sample"),
                          extra=dict(e.get("extra", {})))
        names = [n for n in [e["source"], *e["hosts"]] if n]
        keep |= set(names)
        found = {}
        for n in names:
            try:
                found[n] = pool.lookup(n)
            except ValueError:  # gone: killed, or its node lost
                pass
        rec.source = found.get(e["source"]) if e["source"] else None
        rec.actors = [found[n] for n in e["hosts"] if n in found]
        stages[rec.name] = rec
        if len(found) < len(names) or None in e["hosts"]:
            lost.append(rec.name)  # the survivors are torn down when it starts again
            continue
        for actor, a in zip(rec.all_actors, assignments_of(rec, monitor, registry), strict=True):
            pool.assignments[aid(actor)] = a
    pool.kill_orphans(keep)
    return lost
