"""The ``%fusion`` sub-commands: one small function each, a thin layer over the Python API.

Every sub-command declares its arguments with IPython's ``magic_arguments`` and an example
for the help; :func:`~fusionkit.notebook.command.command` registers it in ``COMMANDS``
(:mod:`fusionkit.notebook.command`). A function receives the ``FusionMagics`` instance
(the shell and the settings), the parsed arguments and the cell body (``None`` for a line
magic) and returns what the cell shows. Importing this module registers them all.
"""

from __future__ import annotations

import argparse
import importlib
import re
import socket
from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from fusionkit.errors import FusionError, StageNotFoundError
from fusionkit.notebook import parsing as p
from fusionkit.notebook.command import (
    COMMANDS,
    command,
    find,
    has_body,
    output,
    overview,
    stage_name,
    store_output,
)
from fusionkit.notebook.namespace import pick_function, pick_model, run_body
from fusionkit.notebook.parsing import FusionUsageError
from fusionkit.notebook.results import (
    Help,
    LiveStage,
    Note,
    StatusView,
    check,
    wait_for_stage,
)
from fusionkit.notebook.sources import SOURCE_KINDS, make_source

# what the magic dispatches on: importing them from here registers every sub-command first
__all__ = ["COMMANDS", "find", "overview"]


def _kind(name: str) -> str:
    """The kind of stage ``name``; the controller's "did you mean" error if there is none."""
    from fusionkit.stages import spec

    return spec(name).kind


# -- connecting ---------------------------------------------------------------------------------

@command("connect", "%fusion connect --address auto", connected=False)
@magic_arguments("fusion connect")
@argument("--address", metavar="ADDRESS", default=None,
          help="an existing Ray cluster: auto, or ray://host:10001 (default: a local Ray)")
@argument("--num-cpus", type=p.positive_int, default=None, metavar="N",
          help="CPUs of a local Ray (default: at least 4)")
def connect(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """Connect to Ray and the pipeline's controller; a local Ray unless --address."""
    import fusionkit as fk

    return fk.connect(args.address or magics.address or None, num_cpus=args.num_cpus)


# -- defining stages ----------------------------------------------------------------------------

@command("stream", "%%fusion stream clicks --source synthetic --rate 5000 --batch 500\n"
         "def featurize(df):\n"
         "    df[\"evening\"] = (df[\"hour\"] >= 18).astype(\"int64\")\n"
         "    return df", cell=True)
@magic_arguments("fusion stream")
@stage_name("the stream stage")
@argument("--source", default="synthetic", metavar="SOURCE",
          help=f"where events come from: {SOURCE_KINDS} (default: synthetic)")
@argument("--rate", type=p.rate, default=argparse.SUPPRESS, metavar="N",
          help="events per second of a synthetic or replayed source, or max "
               "(default: FusionMagics.rate)")
@argument("--batch", type=p.positive_int, default=None, metavar="N",
          help="events per batch (default: FusionMagics.batch_size)")
@argument("--fn", metavar="NAME", default=None,
          help="the function to run on each batch (default: the one the cell defines)")
@argument("--key-by", metavar="COL", default=None, help="partition the events by this column")
@argument("--parallelism", type=p.positive_int, default=1, metavar="N", help="actors running the function")
@argument("--seed", type=int, default=None, metavar="N", help="seed of the synthetic source")
@argument("--overload", choices=["wait", "shed"], default="wait", metavar="POLICY",
          help="when the next stage cannot keep up: wait (the source lags) or shed (drop, "
               "counted) (default: wait)")
@argument("--start", action="store_true",
          help="read at once, with no stage on it yet (default: wait for the first train stage)")
@output
def stream(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Define (or replace) a stream stage; the cell body defines its batch function.

    The function takes a DataFrame of events and returns one (new columns, fewer rows).
    The stage waits (status ``waiting``) until a train stage is defined on it, so that one
    learns every event; ``--start`` (or ``%fusion resume NAME``) runs it alone.
    """
    import fusionkit as fk

    ns = magics.shell.user_ns
    source = make_source(magics, args)
    bound = run_body(magics.shell, cell) if has_body(cell) else []
    fn = pick_function(ns, bound, args.fn) if (has_body(cell) or args.fn) else None
    fk.stream(args.name, source=source, fn=fn, key_by=args.key_by,
              batch_size=args.batch or magics.batch_size, parallelism=args.parallelism,
              overload=args.overload, start=args.start)
    return store_output(magics, args, LiveStage(args.name, "stream"))


@command("train", "%%fusion train ctr --on clicks --label clicked --publish-every 1s "
         "--features price,dwell,age,hour,position,evening\n"
         "from river import linear_model, preprocessing\n"
         "model = preprocessing.StandardScaler() | linear_model.LogisticRegression()", cell=True)
@magic_arguments("fusion train")
@stage_name("the train stage (and of its model)")
@argument("--on", required=True, metavar="STREAM", help="the stream stage it learns from")
@argument("--label", metavar="COL", default=None,
          help="the label column (default: the one the stream's source names)")
@argument("--model", metavar="VAR", default=None,
          help="the model variable (default: `model`, or the one model the cell makes)")
@argument("--publish-every", type=p.publish_every, default=None, metavar="EVERY",
          help="publish a version every duration (1s) or number of events (1000) "
               "(default: FusionMagics.publish_every)")
@argument("--features", metavar="COLS", default=None,
          help="comma-separated feature columns (default: all but the label and those "
               "named like ids, such as user_id), or the name of a feature definition "
               "(feats = fk.features(...)) that makes them")
@output
def train(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Define (or replace) a train stage; the cell body makes the model to learn online.

    Each batch is first predicted, then learned (prequential accuracy without a hold-out).
    """
    import fusionkit as fk

    if not has_body(cell) and args.model is None:
        raise FusionUsageError("%fusion train needs a model: make it in the cell body "
                               "(%%fusion train ...) or name a variable with --model VAR")
    ns = magics.shell.user_ns
    bound = run_body(magics.shell, cell) if has_body(cell) else []
    model = pick_model(ns, bound, args.model)
    label = args.label or _stream_label(args.on)
    publish = args.publish_every or p.publish_every(magics.publish_every)
    features = _feature_definition(ns, args.features)
    if features is None and args.features:
        features = [c.strip() for c in args.features.split(",") if c.strip()]
    fk.train(args.name, on=args.on, model=model, label=label, publish_every=publish,
             features=features)
    return store_output(magics, args, LiveStage(args.name, "train"))


def _feature_definition(ns: dict[str, Any], name: str | None) -> Any:
    """The feature definition (``fk.features``) a variable ``name`` holds, else None."""
    from fusionkit.streaming.features import Features

    value = ns.get(name.strip()) if name else None
    return value if isinstance(value, Features) else None


def _value(text: str) -> Any:
    """A value as written (a label, a key): an int, else a float, else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _idle(text: str) -> float | None:
    """``--idle``: a duration, or ``never``."""
    return None if text.lower() in ("never", "none", "off") else p.duration(text)


@command("join", "%fusion join examples --left impressions --right clicks --on request_id "
         "--within 30s --label clicked --default 0")
@magic_arguments("fusion join")
@stage_name("the join stage")
@argument("--left", required=True, metavar="STREAM",
          help="the stream of the events to label (impressions, served rows)")
@argument("--right", required=True, metavar="STREAM",
          help="the stream of their outcomes (clicks), matched by key")
@argument("--on", required=True, metavar="COL", help="the key column of both streams")
@argument("--within", required=True, type=p.duration, metavar="DURATION",
          help="an outcome within this event time after its event labels it (30s)")
@argument("--label", default="label", metavar="COL",
          help="the examples' label column: the outcome's value of it, or 1 (default: label)")
@argument("--default", type=_value, default=0, metavar="VALUE",
          help="the label of an event with no outcome within the window (default: 0)")
@argument("--late", choices=("side", "emit"), default="side", metavar="POLICY",
          help="late outcomes: side (counted, dead letters) or emit (a correction example)")
@argument("--idle", type=_idle, default="5s", metavar="DURATION",
          help="an input quiet this long stops holding the watermark back (default: 5s; never)")
@argument("--allowed-lateness", type=p.duration, default=0.0, metavar="DURATION",
          help="how far behind its input's newest event time an event may come")
@argument("--max-pending", type=p.positive_int, default=None, metavar="N",
          help="most events waiting for their outcome; beyond it the oldest are negatives")
@argument("--parallelism", type=p.positive_int, default=1, metavar="N",
          help="actors, each joining a part of the keys (default: 1)")
@output
def join(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Define (or replace) a join stage: events of --left labelled by the outcomes of
    --right with the same --on key within --within; a train stage learns them ``--on`` it.
    """
    import fusionkit as fk

    idle = p.duration(args.idle) if isinstance(args.idle, str) else args.idle
    fk.join(args.name, left=args.left, right=args.right, on=args.on, within=args.within,
            label=args.label, default=args.default, late=args.late, idle=idle,
            allowed_lateness=args.allowed_lateness, max_pending=args.max_pending,
            parallelism=args.parallelism)
    return store_output(magics, args, LiveStage(args.name, "join"))


def _stream_label(on: str) -> str | None:
    """The label column the source of stream ``on`` names (None if it names none)."""
    from fusionkit.stages import spec as spec_of

    try:
        spec = spec_of(on)
    except StageNotFoundError:
        return None  # fk.train reports the unknown stream with its "did you mean"
    if spec.kind == "join":  # its examples carry the join's label column
        return spec.label
    label = getattr(getattr(spec, "source", None), "label", None)
    if spec.kind == "stream" and label is None:
        raise FusionUsageError(f"--label is missing: the source of stream {on!r} does not "
                               f"name a label column; give it with --label COL")
    return label


@command("serve", "%fusion serve ctr-api --model ctr --replicas 2 --port auto")
@magic_arguments("fusion serve")
@stage_name("the serve stage (its HTTP route is /NAME)")
@argument("--model", required=True, metavar="TRAIN", help="the train stage whose live "
          "version answers")
@argument("--replicas", type=p.positive_int, default=None, metavar="N",
          help="Ray Serve replicas (default: FusionMagics.serve_replicas)")
@argument("--port", type=p.port, default=None, metavar="PORT",
          help="HTTP port on 127.0.0.1, or auto: the port Ray Serve uses already, else a free "
               "one (default: FusionMagics.serve_port)")
@argument("--route", default=None, metavar="PATH", help="HTTP route (default: /NAME)")
@argument("--retry", choices=("on", "off"), default=None,
          help="HTTP through a front that asks another replica when one dies holding a "
               "request (default: on with 2 or more replicas)")
@argument("--log", type=p.stream_name, default=None, metavar="STREAM",
          help="make every answered row an event of stream STREAM (request id, features, "
               "prediction, version), e.g. served")
@argument("--feedback", type=p.stream_name, default=None, metavar="STREAM",
          help="take POST ROUTE/feedback rows {request_id, label} into stream STREAM, "
               "e.g. clicks-http")
@argument("--shadow", action="append", default=[], metavar="TRAIN",
          help="a train stage whose live version also answers every request, off the "
               "response path, into the --log stream only (repeatable)")
@argument("--canary", action="append", type=p.canary_share, default=[], metavar="TRAIN=SHARE",
          help="a train stage answering SHARE of the rows, e.g. ctr-tree=0.1 (repeatable)")
@argument("--sticky", default=None, metavar="COL",
          help="route each row by a stable hash of this column, e.g. user_id: a user sees "
               "one model")
@argument("--features", metavar="VAR", default=None,
          help="a feature definition (feats = fk.features(...)): request rows carry raw "
               "fields and get their features made as the train stage's")
@argument("--staleness", type=p.duration, default=0.05, metavar="DURATION",
          help="how stale the table values a replica answers with may be: it brings its "
               "copy of the tables up to date about every half of it (default: 50ms)")
@output
def serve(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Serve the live model of a train stage over HTTP and a Python handle.

    Returns at once; the stage shows `starting` until Ray Serve answers (the first serve
    stage starts Ray Serve, which takes seconds): `%fusion wait NAME` waits for it.
    With `--log served`, every answered row becomes an event of stream `served`; with
    `--feedback clicks-http`, `POST <route>/feedback` takes labels into `clicks-http`.
    `--shadow ctr-tree` has `ctr-tree` answer every request too, into the log only;
    `--canary ctr-tree=0.1 --sticky user_id` has it answer a tenth of the users.
    `%fusion compare NAME` sets the models side by side; `%fusion promote NAME TRAIN`.
    """
    import fusionkit as fk

    _check_logs(args)
    _check_routing(args)
    features = _feature_definition(magics.shell.user_ns, args.features)
    if args.features and features is None:
        raise FusionUsageError(f"%fusion serve: --features {args.features!r} is not a feature "
                               f"definition; make one first, e.g. feats = fk.features(fn, "
                               f"tables={{'user-stats': 'user_id'}})")
    port = args.port if args.port is not None else (magics.serve_port or "auto")
    fk.serve(args.name, model=args.model, replicas=args.replicas or magics.serve_replicas,
             port=serve_port(port), route=args.route,
             retry={"on": True, "off": False}.get(args.retry), log=args.log,
             feedback=args.feedback, shadow=args.shadow, canary=dict(args.canary) or None,
             sticky=args.sticky, features=features, staleness=args.staleness, wait=False)
    return store_output(magics, args, LiveStage(args.name, "serve"))


def _check_logs(args: argparse.Namespace) -> None:
    """--log and --feedback name two new streams, neither the stage nor its model."""
    if args.log is not None and args.log == args.feedback:
        raise FusionUsageError(f"%fusion serve: --log and --feedback are both {args.log!r}; "
                               f"the served rows and their feedback need a stream each")
    for flag, stream in (("--log", args.log), ("--feedback", args.feedback)):
        if stream in (args.name, args.model):
            raise FusionUsageError(f"%fusion serve: {flag} {stream!r} is the name of the "
                                   f"serve stage or its model; name the stream otherwise")


def _check_routing(args: argparse.Namespace) -> None:
    """--shadow needs --log; no model named twice; shares adding up to at most 1."""
    if args.shadow and args.log is None:
        raise FusionUsageError("%fusion serve: --shadow answers go to the served log only; "
                               "add --log STREAM, e.g. --log served")
    names = [args.model, *args.shadow, *(m for m, _ in args.canary)]
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise FusionUsageError(f"%fusion serve: {twice[0]!r} is named twice among --model, "
                               f"--shadow and --canary; name each model once")
    total = sum(s for _, s in args.canary)
    if total > 1:
        raise FusionUsageError(f"%fusion serve: the --canary shares add up to {total:g}; "
                               f"they are shares of the rows, at most 1 together")
    if args.sticky is not None and not args.canary:
        raise FusionUsageError("%fusion serve: --sticky routes the rows of a --canary; "
                               "add one, e.g. --canary ctr-tree=0.1")


@command("compare", "%fusion compare ctr-api")
@magic_arguments("fusion compare")
@stage_name("the serve stage")
def compare(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """The serve stage's models side by side on its traffic and joined outcomes: requests,
    accuracy, log loss, the difference from the primary with a 95% interval, a verdict."""
    import fusionkit as fk

    _serve_stage(args.name, "compare")
    return fk.compare(args.name)


@command("promote", "%fusion promote ctr-api ctr-tree")
@magic_arguments("fusion promote")
@stage_name("the serve stage")
@argument("model", metavar="TRAIN", help="its canary or shadow that answers from now on")
def promote(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """Make a canary or shadow the model answering every request, with no failed request."""
    import fusionkit as fk

    _serve_stage(args.name, "promote")
    fk.promote(args.name, args.model)
    return LiveStage(args.name, "serve")


@command("canary", "%fusion canary ctr-api 0.2")
@magic_arguments("fusion canary")
@stage_name("the serve stage")
@argument("share", metavar="SHARE", help="its canary's share, e.g. 0.2, or TRAIN=SHARE")
def canary(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """Change a canary's share of the rows live (0 removes it)."""
    import fusionkit as fk

    _serve_stage(args.name, "canary")
    try:
        share: Any = (dict([p.canary_share(args.share)]) if "=" in args.share
                      else p.share(args.share))
    except argparse.ArgumentTypeError as exc:
        raise FusionUsageError(f"%fusion canary: SHARE {exc}") from None
    fk.canary(args.name, share)
    return LiveStage(args.name, "serve")


def _serve_stage(name: str, sub: str) -> None:
    """A plain sentence when ``name`` is a stage of another kind."""
    kind = _kind(name)
    if kind != "serve":
        raise FusionUsageError(f"%fusion {sub}: {name!r} is a {kind} stage; {sub} takes the "
                               f"name of a serve stage")


def serve_port(port: int | str) -> int:
    """``auto``: the port of a running serve stage (Serve has one per cluster), else a free one."""
    if port != "auto":
        return int(port)
    from urllib.parse import urlsplit as split_url

    from fusionkit.stages import status

    rows = status()
    if "url" in rows:
        for url in rows.loc[rows["kind"] == "serve", "url"].dropna():
            found = split_url(url).port
            if found:
                return found
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- looking ------------------------------------------------------------------------------------

@command("status", "%fusion status")
@magic_arguments("fusion status")
@argument("name", metavar="NAME", nargs="?", default=None,
          help="one stage (default: every stage)")
@output
def status(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """The pipeline's stages with status, events, rate and errors, kept current."""
    if args.name is None:
        return store_output(magics, args, StatusView())
    return store_output(magics, args, LiveStage(args.name, _kind(args.name)))


@command("table", "%%fusion table user-stats --on impressions --key user_id --window 5m "
         "--slide 10s --ttl 1h --default views_5m=0\n"
         "views_5m = count(user_id)\n"
         "avg_price_5m = mean(price)", cell=True)
@magic_arguments("fusion table")
@stage_name("the table stage")
@argument("--on", required=True, metavar="STREAM", help="the stream stage it is kept from")
@argument("--key", required=True, metavar="COL", help="the key column: one row per value")
@argument("--window", required=True, type=p.duration, metavar="DURATION",
          help="the window of event time each value covers (5m)")
@argument("--slide", type=p.duration, default=None, metavar="DURATION",
          help="how often a new window starts, the table's granularity (default: a tenth "
               "of --window)")
@argument("--ttl", type=p.duration, default=None, metavar="DURATION",
          help="forget a key quiet for this long in event time (default: never)")
@argument("--default", action="append", default=[], metavar="NAME=VALUE",
          help="the value of aggregation NAME for a key the table does not hold "
               "(repeatable; default: NaN)")
@output
def table(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Define (or replace) a table stage: per --key, aggregates of the stream's events in
    the window still open at the key's newest event. The cell body lists the aggregations,
    one per line, ``NAME = FUNCTION(COLUMN)``: count, sum, mean, min, max, std, var,
    first, last or size. ``%fusion lookup NAME KEY...`` reads it."""
    import fusionkit as fk

    agg = table_aggregations(cell)
    defaults = {}
    for item in args.default:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in agg:
            raise FusionUsageError(f"%%fusion table: --default {item!r} should be NAME=VALUE "
                                   f"with NAME one of the aggregations {list(agg)}")
        defaults[name.strip()] = _value(value.strip())
    slide = args.slide if args.slide is not None else args.window / 10
    fk.table(args.name, on=args.on, key=args.key, ttl=args.ttl, defaults=defaults or None,
             window=fk.sliding(args.window, slide, agg=agg))
    return store_output(magics, args, LiveStage(args.name, "table"))


AGG_LINE = re.compile(r"^\s*([A-Za-z_]\w*)\s*=\s*([a-z]+)\(\s*([^()\s]+)\s*\)\s*(#.*)?$")


def table_aggregations(cell: str | None) -> dict[str, tuple[str, str]]:
    """The aggregations a ``%%fusion table`` cell lists, ``NAME = FUNCTION(COLUMN)`` a line.

    >>> table_aggregations("views = count(user_id)\\n# a comment\\navg = mean(price)")
    {'views': ('user_id', 'count'), 'avg': ('price', 'mean')}
    """
    lines = [ln for ln in (cell or "").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if not lines:
        raise FusionUsageError("%%fusion table needs its aggregations in the cell body, one a "
                               "line: NAME = FUNCTION(COLUMN), e.g. views_5m = count(user_id)")
    agg = {}
    for ln in lines:
        m = AGG_LINE.match(ln)
        if m is None:
            raise FusionUsageError(f"%%fusion table: cannot read {ln.strip()!r}; write each "
                                   f"aggregation as NAME = FUNCTION(COLUMN), e.g. "
                                   f"avg_price_5m = mean(price)")
        agg[m.group(1)] = (m.group(3), m.group(2))
    return agg


@command("lookup", "%fusion lookup user-stats 17 42")
@magic_arguments("fusion lookup")
@stage_name("the table stage")
@argument("keys", metavar="KEY", nargs="+",
          help="keys to read (a number is read as one, else the text)")
@output
def lookup(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """A table's freshest values of some keys: one row per key, with ``as_of`` and ``miss``
    (a key the table does not hold has its defaults)."""
    import fusionkit as fk

    kind = _kind(args.name)
    if kind != "table":
        raise FusionUsageError(f"%fusion lookup: {args.name!r} is a {kind} stage; lookup "
                               f"takes the name of a table stage")
    return store_output(magics, args, fk.lookup(args.name, [_value(k) for k in args.keys]))


@command("wait", "%fusion wait ctr-api --timeout 2min")
@magic_arguments("fusion wait")
@stage_name()
@argument("--status", default=None, choices=["running", "waiting", "paused", "finished"],
          metavar="STATUS", help="the status to wait for: running, waiting, paused or finished "
                                 "(default: running)")
@argument("--events", type=p.positive_int, default=None, metavar="N", help="at least this many events in")
@argument("--version", type=p.version_number, default=None, metavar="V",
          help="a live model version at least this (train stages default to 1)")
@argument("--timeout", type=p.duration, default=None, metavar="DURATION",
          help="give up after this long (default: FusionMagics.wait_timeout)")
@output
def wait(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Block until a stage is ready; raise its failure, with the remote traceback, if it fails.

    Ready: running (a serve stage answers; a train stage has published a first version).
    """
    row = wait_for_stage(args.name, status=args.status, events=args.events,
                         version=args.version, timeout=args.timeout or magics.wait_timeout)
    return store_output(magics, args, LiveStage(args.name, row["kind"]))


@command("check", "%fusion check")
@magic_arguments("fusion check")
@argument("name", metavar="NAME", nargs="?", default=None,
          help="one stage (default: every stage)")
def check_(magics: Any, args: argparse.Namespace, cell: str | None) -> Note:
    """Raise the failure of a failed stage (with its remote traceback), so CI sees it."""
    names = check(args.name)
    return Note(f"healthy: {', '.join(names)}" if names else "no stages")


@command("dashboard", "%fusion dashboard --interval 250ms")
@magic_arguments("fusion dashboard")
@argument("--interval", type=p.duration, default=None, metavar="DURATION",
          help="time between updates (default: the dashboard's, a third of a second)")
@argument("--window", type=p.duration, default=None, metavar="DURATION",
          help="history the charts show (default: 2min)")
def dashboard(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
    """The live dashboard: pipeline view, a card per stage with controls, live charts."""
    try:
        board = importlib.import_module("fusionkit.notebook.dashboard")
    except ModuleNotFoundError as exc:
        if exc.name != "fusionkit.notebook.dashboard":
            raise
        raise FusionError("the dashboard is not available in this installation of fusionkit; "
                          "%fusion status shows the stages") from None
    options = {k: v for k, v in (("interval", args.interval), ("window", args.window))
               if v is not None}
    return board.show(**options)


# -- operating ----------------------------------------------------------------------------------

@command("stop", "%fusion stop clicks")
@magic_arguments("fusion stop")
@argument("name", metavar="NAME", nargs="?", default=None,
          help="the stage to stop (default: every stage)")
def stop(magics: Any, args: argparse.Namespace, cell: str | None) -> Note:
    """Stop one stage, or every stage (serve, then train, then stream)."""
    import fusionkit as fk

    names = fk.stop(args.name)
    return Note(f"stopped {', '.join(names)}" if names else "no stages to stop", stopped=names)


@command("pause", "%fusion pause ctr")
@magic_arguments("fusion pause")
@stage_name("the stream or train stage")
def pause(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Pause a stream or train stage; upstream stages slow down to wait for it."""
    import fusionkit as fk

    fk.pause(args.name)
    return LiveStage(args.name, _kind(args.name))


@command("resume", "%fusion resume ctr")
@magic_arguments("fusion resume")
@stage_name()
def resume(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Resume a paused stage, or run a waiting stream stage alone (no train stage on it)."""
    import fusionkit as fk

    fk.resume(args.name)
    return LiveStage(args.name, _kind(args.name))


@command("scale", "%fusion scale clicks 3")
@magic_arguments("fusion scale")
@stage_name("the stream or serve stage")
@argument("n", metavar="N", type=p.positive_int,
          help="actors of a stream stage, or replicas of a serve stage")
def scale(magics: Any, args: argparse.Namespace, cell: str | None) -> LiveStage:
    """Change a stream stage's parallelism or a serve stage's replicas."""
    import fusionkit as fk

    fk.scale(args.name, args.n)
    return LiveStage(args.name, _kind(args.name))


def _versioned(action: str, example: str, doc: str, takes_version: bool = True) -> None:
    """Register rollback / pin / unpin, which share their shape."""
    def run(magics: Any, args: argparse.Namespace, cell: str | None) -> Any:
        import fusionkit as fk

        extra = (args.version,) if takes_version else ()
        getattr(fk, action)(args.name, *extra)
        try:
            return LiveStage(args.name, _kind(args.name))
        except StageNotFoundError:  # a model whose train stage was stopped
            done = f"{action} v{args.version}" if takes_version else action
            return Note(f"{args.name}: {done}")

    run.__name__ = action
    run.__doc__ = doc
    decorated = run
    if takes_version:  # applied bottom-up: the version comes after the name
        decorated = argument("version", metavar="V", type=p.version_number,
                             help="a version number (fk.models(NAME) lists them)")(decorated)
    decorated = stage_name("the train stage")(decorated)
    decorated = magic_arguments(f"fusion {action}")(decorated)
    command(action, example)(decorated)


_versioned("rollback", "%fusion rollback ctr 3",
           "Make an earlier model version live again; serve stages switch to it at once.")
_versioned("pin", "%fusion pin ctr 3",
           "Keep a model version live until unpin; newer versions are kept but not served.")
_versioned("unpin", "%fusion unpin ctr",
           "Let new versions go live again (the newest becomes live).", takes_version=False)


# -- help -------------------------------------------------------------------------------------

@command("help", "%fusion help stream", connected=False)
@magic_arguments("fusion help")
@argument("topic", metavar="COMMAND", nargs="?", default=None, help="a sub-command")
def help_(magics: Any, args: argparse.Namespace, cell: str | None) -> Help:
    """Explain the magic, or one sub-command with its options and an example."""
    if args.topic is None:
        return Help(overview())
    return Help(find(args.topic).help())
