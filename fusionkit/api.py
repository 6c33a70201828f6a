"""The Python API: define, operate and look at a pipeline's stages.

Every function talks to the controller actor; the notebook magics are a thin layer over
these functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fusionkit._duration import parse_duration
from fusionkit._names import check_name
from fusionkit.connect import (  # noqa: F401 (call, connection, handles: the notebook layer's)
    ControllerInfo,
    call,
    connection,
    controller_info,
    handles,
    wait_warm,
)
from fusionkit.errors import FusionError
from fusionkit.handles import StageHandle
from fusionkit.runtime.records import Recovery
from fusionkit.runtime.specs import JoinSpec, ServeSpec, StreamSpec, TrainSpec
from fusionkit.serving.limits import MAX_BODY_BYTES, warn_if_exposed
from fusionkit.serving.served_log import LOGGED_SCHEMA
from fusionkit.sources.base import Source
from fusionkit.sources.logfiles import LogFiles
from fusionkit.stages import (
    check,
    dead_letters,
    infos,
    metrics,
    pause,
    peek,
    resume,
    scale,
    status,
    stop,
)
from fusionkit.stages import spec as stage_spec
from fusionkit.streaming.base import Operator
from fusionkit.streaming.features import Features
from fusionkit.streaming.operators import Filter, KeyBy, Map


def _duration(value: float | str | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"{what} must be a positive duration, got {value!r}")
    return seconds


def _placement(resources: dict[str, float] | None, placement: str
               ) -> tuple[dict[str, float] | None, str]:
    """Check the placement hints of ``stream`` and ``train``."""
    if placement not in ("pack", "spread"):
        raise ValueError(f"placement must be 'pack' (Ray's default: fill a node first) or "
                         f"'spread' (over the nodes), got {placement!r}")
    if resources is None:
        return None, placement
    if not isinstance(resources, dict):
        raise TypeError(f"resources must be a dict of resource name -> amount, e.g. "
                        f"{{'gpu_node': 1}}, got {type(resources).__name__}")
    out = {}
    for key, amount in resources.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"resource names must be non-empty strings, got {key!r}")
        if (isinstance(amount, bool) or not isinstance(amount, (int, float))
                or not amount > 0 or amount == float("inf")):
            raise ValueError(f"resource {key!r} needs a positive amount, got {amount!r}")
        out[key] = float(amount)
    return out or None, placement


def stream(name: str, source: Source, fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
           *, filter: Callable | str | None = None, key_by: str | Callable | None = None,
           window: Operator | None = None, operators: Sequence[Operator] = (),
           batch_size: int = 500, linger: float | str = "10ms", parallelism: int = 1,
           max_inflight: int = 4, schema: Any = None, paused: bool = False,
           start: bool = False, overload: str = "wait",
           resources: dict[str, float] | None = None, placement: str = "pack") -> StageHandle:
    """Define (or replace) a stream stage reading ``source``.

    The chain runs in this order: ``fn`` (a vectorized DataFrame -> DataFrame map),
    ``filter``, ``key_by``, ``window``, then any further ``operators``. With
    ``parallelism=N`` the events are partitioned by ``key_by`` over N actors; a source of
    several broker partitions (``fk.sources.kafka(..., partitions="all")``) without
    ``key_by`` is spread instead: each of the N actors reads its own share of the
    partitions and runs the whole chain, with its own offsets in the checkpoints.

    The stage reads its source only once something takes its events: a train, join or table
    stage defined on it, or a sink in its chain (``fk.sinks``). Until then its status is
    ``waiting``, with the reason; it reads nothing but the sample the definition checks (what ``fk.peek``
    shows then), so a train stage defined in the next cell learns every event, and a broker
    is acknowledged nothing meanwhile. The first consumer starts it; when the last one is
    stopped it waits again. A sink is a consumer from the start: to have a train stage
    defined later see every event too, define the stage ``paused=True``, then resume it.
    ``start=True`` (or ``fk.resume(name)`` later) runs it with nothing downstream.
    ``paused=True`` defines it paused: it reads nothing until ``fk.resume(name)``, even
    once consumers are defined.

    ``overload`` says what happens when the source outpaces the stages downstream:
    ``"wait"`` (the default) holds the source back (backpressure: memory stays flat, the
    source's lag behind its schedule grows and is reported as ``lag_s``); ``"shed"`` keeps
    the source on schedule and drops each batch the next stage has no room for, counted as
    ``shed`` in ``fk.status()`` and ``fk.metrics()``: fresher results, fewer events learned.

    Placement on a cluster of several nodes (see docs/cluster.md): ``resources`` are Ray
    resources each of the stage's actors asks for, e.g. ``{"w1": 1}`` for a node started
    with ``ray start --resources='{"w1": 1}'`` (``"CPU"``, ``"GPU"`` and ``"memory"`` work
    too); ``placement="spread"`` puts the stage's actors on the nodes in turn (each holds
    its node softly: a full or lost node's actor goes elsewhere), ``"pack"`` (the default)
    leaves it to Ray, which fills a node first. A stage with hints gets actors
    started for it (a few seconds) instead of warm ones; a restarted actor keeps its hints.
    """
    check_name(name)
    if not isinstance(source, Source):
        raise TypeError(_not_a_source(source))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    if overload not in ("wait", "shed"):
        raise ValueError(f"overload must be 'wait' (backpressure) or 'shed' (drop what the "
                         f"next stage has no room for), got {overload!r}")
    if paused and start:
        raise ValueError("paused=True and start=True contradict each other: paused waits for "
                         "fk.resume, start reads at once")
    resources, placement = _placement(resources, placement)
    ops: list[Operator] = []
    if fn is not None:
        ops.append(Map(fn))
    if filter is not None:
        ops.append(Filter(filter))
    if key_by is not None:
        ops.append(KeyBy(key_by))
    if window is not None:
        ops.append(window)
    ops.extend(operators)
    spec = StreamSpec(name=name, source=source, operators=ops, key=key_by,
                      batch_size=batch_size, linger=_duration(linger, "linger"),
                      parallelism=parallelism, max_inflight=max_inflight, schema=schema,
                      paused=paused, start=start, overload=overload, resources=resources,
                      placement=placement)
    call("define_stream", spec)
    return StageHandle(name, "stream")


def _not_a_source(source: Any) -> str:
    """What to write instead of a DataFrame, a file name or anything else given as source."""
    if isinstance(source, pd.DataFrame):
        how = "to stream a DataFrame, replay it: fk.sources.replay(df, label=..., rate=...)"
    elif isinstance(source, (str, os.PathLike)):
        how = (f"to stream a .csv or .parquet file, replay it: "
               f"fk.sources.replay({str(source)!r}, label=...)")
    else:
        how = "e.g. fk.sources.synthetic(...), fk.sources.replay(df), fk.sources.redis(...)"
    return f"source must be a fusionkit source, got {type(source).__name__}: {how}"


def train(name: str, on: str, model: Any, label: str, *, features: Any = None,
          publish_every: float | str | int | None = "1s", guard: Any = None, keep: int = 5,
          resources: dict[str, float] | None = None, placement: str = "pack",
          **learner_options: Any) -> StageHandle:
    """Define (or replace) a train stage learning ``model`` from stream ``on``.

    ``features`` are the columns the model learns from. Without them it gets every column of
    the stream but the label, the reserved ``_`` columns and those named like ids (``id``,
    ``user_id``, ``userId``): an id names an entity rather than describes it, so a model
    would weigh a meaningless number, or learn one weight per user that never generalizes.
    Text columns are kept, for a model that encodes them (River's ``OneHotEncoder``; the
    scikit-learn adapter one-hot encodes them itself); a model made for numbers is tried on
    a sample when the stage is defined and refused with a sentence naming the text columns.
    Serve requests need the same columns (extra ones are ignored).

    ``features`` can also be a feature definition, ``fk.features(fn, tables={...})``: each
    batch is enriched before it is learned, every event with its tables' values as of just
    before it, then ``fn`` (``fusionkit.streaming.features``); the model learns from the
    columns that makes (as above). Its tables must be kept from stream ``on`` itself, so
    each event meets them as a lookup just before it would have. A serve stage given the
    same definition makes the same features from request rows.

    ``publish_every`` is a duration ("1s", 0.5) or a number of events (an int). The last
    ``keep`` versions stay in memory; the registry remembers the last 1,000 (records and
    files under the storage folder, plus the live and a pinned one) and forgets older ones.
    ``resources`` and ``placement`` place its actor on a cluster, as for ``stream``.
    """
    check_name(name)
    resources, placement = _placement(resources, placement)
    every_s, every_n = None, None
    if isinstance(publish_every, int) and not isinstance(publish_every, bool):
        if publish_every < 1:
            raise ValueError("publish_every must be a positive number of events or a duration")
        every_n = publish_every
    else:
        every_s = _duration(publish_every, "publish_every")
    enrich = features if isinstance(features, Features) else None
    columns = None if features is None or enrich is not None else list(features)
    spec = TrainSpec(name=name, on=on, model=model, label=label, features=columns,
                     publish_every=every_s, publish_events=every_n, guard=guard, keep=keep,
                     learner_options=learner_options, resources=resources, placement=placement,
                     enrich=enrich)
    call("define_train", spec)
    return StageHandle(name, "train")


def join(name: str, left: str, right: str, on: str, within: float | str, *,
         label: str = "label", default: Any = 0, allowed_lateness: float | str = 0.0,
         idle: float | str | None = "5s", late: str = "side",
         late_horizon: float | str | None = None, max_pending: int | None = None,
         key_type: type | None = None, parallelism: int = 1, max_inflight: int = 4,
         resources: dict[str, float] | None = None, placement: str = "pack") -> StageHandle:
    """Define (or replace) a join stage: an event-time interval left join of stream
    ``left`` (e.g. impressions) with stream ``right`` (their outcomes) on column ``on``.

    A left event at ``t`` matches the right events of its key at ``t <= t' <= t + within``;
    its example (the left event's columns and ``label``) goes downstream when its first
    match arrives (the label is the right event's ``label`` column, or 1 when it has none),
    or, with no match, once the watermark passes ``t + within`` (``default`` is the label).
    A train stage defined ``on=name`` learns the examples. The watermark is the minimum over
    both inputs, and within an input over its actors (an input stream on N actors: each
    sends in order, one may run ahead, so the slowest decides); an actor without events for
    ``idle`` (processing time; ``None``: never) stops holding it back, an input that has
    sent no event yet waits for its first (outcomes start a label delay after impressions),
    and one whose bounded source has ended holds nothing back.
    Outcomes after their window (``late``: ``"side"`` files them as dead letters,
    ``"emit"`` sends a correction example), orphans and events without a usable key or
    event time go to ``fk.dead_letters(name)`` with their reason; the counts (pending,
    joined, timed out, late, orphans, overflow, label delay) are in ``fk.infos(name)``.
    At most ``max_pending`` left events wait for a label: beyond it the earliest are
    emitted at once with ``default`` and counted as ``overflow`` (per actor).
    ``allowed_lateness`` is for a source whose own events are out of order (one actor
    reading several partitions; a served log with shadows, whose rows come a little after
    the client's with the request's time: an outcome is kept ``allowed_lateness`` past its
    own time, so a shadow row later than its outcome by more than that gets ``default``).
    ``parallelism=N`` runs the join on N actors, each joining a part of the keys (a stable
    hash) while its watermark follows every event, so the examples are those of one actor;
    the counts are summed in ``fk.status()``, per actor in ``fk.infos(name)``. The other parameters
    are :class:`~fusionkit.streaming.join.IntervalJoin`'s. Its state is in the checkpoints:
    both streams, the join and its train stages roll back together.
    """
    from fusionkit.streaming.join_worker import make_join

    check_name(name)
    if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
        raise FusionError(f"join {name!r}: parallelism must be a whole number of actors, at "
                          f"least 1, not {parallelism!r}")
    if left == right:
        raise FusionError(f"join {name!r} takes {left!r} as both inputs: a join needs two "
                          "different stream stages")
    if name in (left, right):
        raise FusionError(f"join {name!r} cannot take itself as an input: give it its own name")
    resources, placement = _placement(resources, placement)
    spec = JoinSpec(name=name, left=left, right=right, on=on,
                    within=parse_duration(within), label=label, default=default,
                    allowed_lateness=parse_duration(allowed_lateness),
                    idle=None if idle is None else _duration(idle, "idle"), late=late,
                    late_horizon=None if late_horizon is None else parse_duration(late_horizon),
                    max_pending=max_pending, key_type=key_type, parallelism=parallelism,
                    max_inflight=max_inflight, resources=resources, placement=placement)
    make_join(spec)  # its parameters checked here, in the caller's cell
    call("define_join", spec)
    return StageHandle(name, "join")


def serve(name: str, model: str, *, replicas: int = 1, route: str | None = None,
          host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_rows: int = 10_000, retry: bool | None = None,
          max_body_bytes: int = MAX_BODY_BYTES, log: str | None = None,
          feedback: str | None = None, shadow: Sequence[str] = (),
          canary: dict[str, float] | None = None, sticky: str | None = None,
          features: Any = None, staleness: float | str = "50ms",
          wait: bool = True) -> StageHandle:
    """Serve the live version of train stage ``model`` over HTTP and a Python handle.

    The first serve stage starts Ray Serve (several seconds); ``wait=False`` returns at
    once and the stage shows ``starting`` until it answers.

    With ``retry`` (the default with two or more replicas) HTTP requests pass through a
    small front that asks another replica when the one holding a request dies: a lost
    replica then fails no request, for one more call per request (Ray Serve's proxy does
    not send a request again once a replica accepted it). ``fk.predict`` always asks again.

    With ``token``, HTTP requests must send ``Authorization: Bearer <token>``; one without
    it is refused (401) before its body is read. A body over ``max_body_bytes`` (default
    8 MiB: ``max_rows`` rows of ~800 bytes of JSON) is refused (413) unread, and a request
    of more than ``max_rows`` rows (413) before anything is built from them. A ``host``
    other than loopback without a ``token`` warns (``ExposedServeWarning``): anyone who can
    reach the machine could ask.

    ``log="served"`` makes every row the stage answers an event of a stream stage named
    ``served``, which a join or a train stage can be defined on: its ``request_id`` (the
    row's own ``request_id``, a string, or one the replica makes; the answer lists them as
    ``request_ids``), the features as validated, ``_prediction``, ``_proba``, ``_model``,
    ``_version``, ``_replica`` and ``_event_time``. Each replica appends its rows to its
    own JSON-lines files under ``<storage>/logs/served/`` before it answers, so a row
    answered is never lost, even if the replica is killed; the stream stage reads them with
    its position in the checkpoints, and files a completed checkpoint covers are deleted.
    ``feedback="clicks-http"`` adds ``POST <route>/feedback`` taking
    ``{"request_id": ..., "label": ...}`` rows (or a list of them) into a stream stage
    ``clicks-http`` the same way; malformed feedback is refused (400) with the reason.
    Both streams wait, as any stream stage, until something is defined on them.

    ``shadow=["ctr-tree"]``: each request is also answered by train stage ``ctr-tree``'s
    live version, after the client has its answer, into the served log only (so ``log`` is
    needed), with ``_role="shadow"`` and the request's ids: a join scores both models on the
    same requests, and ``fk.compare(name)`` sets them side by side. Shadow work is bounded
    (``fusionkit.serving.shadow``): a shadow slower than the traffic drops requests and
    counts them. Its rows reach the log tens of milliseconds after the client's: when
    outcomes come as fast (a test posting them at once), join with ``allowed_lateness``
    of a second or two, so the shadow's rows still meet them. ``canary={"ctr-tree": 0.1}`` has ``ctr-tree`` answer a tenth of the rows;
    with ``sticky="user_id"`` by the stable hash of the row's ``user_id`` (a user sees one
    model). Defining the stage again with only these three changed (or ``fk.canary``,
    ``fk.promote``) changes them live, without restarting a replica.

    ``features=fk.features(fn, tables={...})`` makes each request's features the way the
    train stage given the same definition makes them: the rows carry raw fields, each gets
    its tables' freshest values by its key, then ``fn``. Each replica keeps a copy of the
    tables' values, brought up to date with what changed in them about every
    ``staleness / 2`` (``staleness`` 50 ms by default), so a request makes no call to a
    table (while a copy is not complete, a request reads the table's actors, and keeps
    what it read for at most ``staleness``). A row without a field the features need is
    refused (400, naming the field); a feature function that raises is refused (422, with
    its error), and the replica goes on. Its totals count the keys read (``fk.infos``:
    ``features_copied``, ``features_misses``, ``features_read``).
    """
    check_name(name)
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
    streams = [s for s in (log, feedback) if s is not None]
    for stream_name in streams:
        check_name(stream_name)
        if stream_name in (name, model):
            raise FusionError(f"serve stage {name!r} cannot log to {stream_name!r}: that is "
                              "the stage's own or its model's name; name the stream otherwise")
    if log is not None and log == feedback:
        raise FusionError(f"log and feedback are both {log!r}: the served rows and their "
                          "feedback need two streams of their own")
    from fusionkit.online import routing_only, set_routing
    from fusionkit.serving.routing import canary_pairs, routing_of

    shadow = (shadow,) if isinstance(shadow, str) else tuple(shadow)
    for other in (*shadow, *(canary or {})):
        check_name(other)
    if shadow and log is None:
        raise FusionError(f"serve stage {name!r}: a shadow's answers go to the served log "
                          "only; name one, e.g. log='served'")
    warn_if_exposed(name, host, token)
    if features is not None and not isinstance(features, Features):
        raise TypeError(f"features must be a feature definition, fk.features(fn, tables=...); "
                        f"got {type(features).__name__}")
    folders = _log_folders(streams)
    spec = ServeSpec(name=name, model=model, replicas=replicas, route=route or f"/{name}",
                     host=host, port=port, token=token, max_rows=max_rows, retry=retry,
                     max_body_bytes=max_body_bytes, log=log, log_folder=folders.get(log),
                     feedback=feedback, feedback_folder=folders.get(feedback),
                     canary=canary_pairs(canary), shadow=shadow, sticky=sticky,
                     enrich=features, staleness=_duration(staleness, "staleness"))
    routing_of(spec)  # checked here, in the caller's cell
    if routing_only(spec):  # the same stage, other routing: changed live
        set_routing(spec)
        return StageHandle(name, "serve")
    for stream_name in streams:  # their streams first: the replicas write as they start
        # rows the replica validated: only the key is checked again, so a missing value
        # (a nullable feature, a NaN probability) is no reason to set an answered row aside
        stream(stream_name, source=LogFiles(folders[stream_name], schema=LOGGED_SCHEMA))
    call("define_serve", spec, wait)
    return StageHandle(name, "serve")


def _log_folders(streams: list[str]) -> dict[str, str]:
    """Where the replicas write each of ``streams``: ``<storage>/logs/<stream>``."""
    if not streams:
        return {}
    storage = call("ping")["storage"]
    if not storage:
        raise FusionError("a served log needs a storage folder: connect(storage=...)")
    return {s: str(Path(storage) / "logs" / s) for s in streams}


def checkpoint(timeout: float = 30.0) -> int | None:
    """Take a consistent checkpoint of every pipeline now; return its id (None if nothing ran).

    Checkpoints are also taken every few seconds (``connect(checkpoint_every=...)``); a stage
    actor that dies is restarted and its pipeline rolls back to the last one, with no event
    lost and none learned twice.
    """
    return call("checkpoint", timeout, timeout=timeout + 5)


def recoveries() -> pd.DataFrame:
    """Every recovery so far: which stage, from which checkpoint, how long it took, and
    ``steps``: the seconds spent waiting for each actor to be up and to restore its state."""
    return _recoveries_frame(call("checkpoint_info")["recoveries"])


def _recoveries_frame(recoveries: Sequence[Recovery | dict[str, Any]]) -> pd.DataFrame:
    """``fk.recoveries()``'s table of Recovery records (dicts, from an older controller)."""
    return pd.DataFrame([Recovery.of(r).as_dict() for r in recoveries],
                        columns=["stage", "checkpoint", "detected", "recovered", "seconds",
                                 "steps"])


def restore(path: str | None = None) -> dict[str, Any]:
    """Start the pipeline of a checkpoint: by default the latest one under the storage, or
    ``path`` (a ``ckpt-NNNNNN`` folder, a checkpoints folder or a storage folder).

    Works in the cluster that took it and after a full restart (``fk.shutdown()``, then
    ``fk.connect(storage=<the same folder>)``): its stream and train stages are defined
    again from the specs saved with it, each source seeks to its checkpointed offset, each
    operator and learner gets its checkpointed state, and the registry (which reloads its
    versions from the storage) keeps every version. Stages of the same names are replaced.
    Returns the checkpoint id, its folder, the stages and the source offsets.
    """
    return call("restore", None if path is None else str(path))


def stage(name: str) -> StageHandle:
    """The handle of stage ``name``, as defining it returned: for a stage defined in another
    cell, notebook or process connected to the same cluster. An unknown name raises
    ``StageNotFoundError`` (with "did you mean").

    On a connected cluster with a stream stage ``clicks`` (not a doctest: it needs one),
    ``fk.stage("clicks")`` shows as ``<fusionkit stream stage 'clicks'>``.
    """
    return StageHandle(name, stage_spec(name).kind)


def actors(name: str | None = None) -> pd.DataFrame:
    """The actors of stage ``name`` (default: every stream and train stage): one row each
    with its role, process id, node, status, events taken and whether Ray restarted it."""
    if name is None:
        names = [r["name"] for r in call("status") if r["kind"] != "serve"]
    else:
        names = [name]
    cols = ["stage", "role", "index", "pid", "node", "status", "events", "restarted"]
    rows = []
    for n in names:
        for i in call("infos", n):
            rows.append({"stage": n, "role": i.get("role", i.get("kind")), "index": i.get("index"),
                         "pid": i.get("pid"), "node": i.get("node"), "status": i.get("status"),
                         "events": int(i.get("totals", {}).get("events_in", 0)),
                         "restarted": i.get("restarted")})
    return pd.DataFrame(rows, columns=cols)



__all__ = ["stream", "train", "serve", "status", "metrics", "stop", "pause", "resume", "scale",
           "dead_letters", "peek", "check", "restore", "actors", "infos", "stage",
           "controller_info", "wait_warm", "ControllerInfo", "FusionError"]
