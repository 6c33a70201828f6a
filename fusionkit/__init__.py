"""fusionkit: build, run and watch an online-learning loop from a notebook, on one Ray cluster.

A usage sketch (not a doctest: it starts a local Ray)::

    import fusionkit as fk
    fk.connect()
    fk.stream("clicks", source=fk.sources.synthetic(rate=5000))
"""

from fusionkit import api, sinks, sources
from fusionkit.api import (
    actors,
    check,
    checkpoint,
    dead_letters,
    infos,
    join,
    metrics,
    pause,
    peek,
    recoveries,
    restore,
    resume,
    scale,
    serve,
    stage,
    status,
    stop,
    stream,
    train,
)
from fusionkit.connect import (
    Connection,
    ControllerInfo,
    connect,
    controller_info,
    shutdown,
    wait_warm,
)
from fusionkit.drift_api import alarms, drift, unwatch_drift, watch_drift
from fusionkit.errors import (
    CorruptCheckpointError,
    FusionError,
    InvalidNameError,
    ModelDivergedError,
    ModelNotFoundError,
    NotConnectedError,
    RegistryError,
    SchemaError,
    StageFailedError,
    StageNotFoundError,
    StorageKeyError,
)
from fusionkit.handles import StageHandle
from fusionkit.models import (
    events,
    freshness,
    freshness_series,
    live_version,
    model,
    models,
    online_metrics,
    pin,
    publish,
    rollback,
    unpin,
)
from fusionkit.online import canary, check_canary, compare, promote, watch_canary
from fusionkit.registry.guard import Guard
from fusionkit.serving.client import PredictionError, predict
from fusionkit.serving.limits import ExposedServeWarning
from fusionkit.streaming.base import Operator
from fusionkit.streaming.validate import Schema
from fusionkit.streaming.windows import SlidingWindow, TumblingWindow
from fusionkit.tables_api import features, lookup, table
from fusionkit.training.protocol import Learner, Prediction

__version__ = "0.1.0"

tumbling = TumblingWindow
sliding = SlidingWindow

__all__ = [
    "Connection", "CorruptCheckpointError", "FusionError", "Guard", "ModelNotFoundError", "actors",
    "api",
    "NotConnectedError", "Schema", "SchemaError", "SlidingWindow", "StageFailedError",
    "StageNotFoundError", "StorageKeyError", "InvalidNameError",
    "TumblingWindow", "alarms", "check", "checkpoint", "connect",
    "dead_letters", "drift", "events", "infos", "join", "freshness", "freshness_series", "live_version",
    "metrics", "model", "models", "online_metrics", "compare", "canary", "promote", "check_canary", "watch_canary", "pause", "peek", "pin", "predict", "publish", "recoveries", "restore",
    "resume", "rollback",
    "scale", "serve", "shutdown", "sinks", "sliding", "sources", "status", "stop", "stream", "train",
    "tumbling", "unpin", "unwatch_drift", "watch_drift", "dashboard",
    "ExposedServeWarning", "Learner", "ModelDivergedError", "Operator", "Prediction",
    "PredictionError", "RegistryError", "StageHandle",
    "ControllerInfo", "controller_info", "stage", "wait_warm", "table", "lookup", "features",
]


def dashboard(**options):
    """The live dashboard of the pipeline (``fusionkit.notebook.dashboard.Dashboard``);
    display it, e.g. as a cell's last expression. Imports the widget stack on first use."""
    from fusionkit.notebook.dashboard import show

    return show(**options)


def load_ipython_extension(ipython):  # %load_ext fusionkit
    from fusionkit.notebook.magics import load_ipython_extension as load

    load(ipython)
