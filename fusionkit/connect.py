"""Connecting to Ray: an embedded local Ray by default, or an existing cluster by address."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from fusionkit._rpc import cause_of
from fusionkit.errors import NotConnectedError, StorageKeyError
from fusionkit.runtime.names import CONTROLLER, NAMESPACE

log = logging.getLogger("fusionkit")


@dataclass(frozen=True)
class Connection:
    """What ``connect()`` returned: where the pipeline lives."""

    address: str
    namespace: str
    started_ray: bool
    storage: str
    controller: Any

    def _repr_html_(self) -> str:
        how = "embedded local Ray" if self.started_ray else "existing Ray cluster"
        return (f"<b>fusionkit</b> connected to {how} at <code>{self.address}</code>, "
                f"namespace <code>{self.namespace}</code>, storage <code>{self.storage}</code>")


_lock = threading.Lock()
_conn: Connection | None = None


def default_storage() -> str:
    """``$FUSIONKIT_HOME/storage/<ray session>``: each cluster keeps its own model versions and
    checkpoints, so two pipelines on one machine never write into each other's folders."""
    home = Path(os.environ.get("FUSIONKIT_HOME", Path.home() / ".fusionkit"))
    try:
        session = ray._private.worker.global_worker.node.session_name
    except AttributeError:  # a client connection: use the cluster's address
        session = ray.get_runtime_context().gcs_address.replace(":", "_")
    return str(home / "storage" / session)


WORKER_PATH = str(Path(__file__).with_name("_worker_path"))


def worker_pythonpath(current: str | None = None) -> str:
    """``PYTHONPATH`` for Ray worker processes: fusionkit's ``_worker_path`` first, where a
    stand-in defers a 1.7 s import that every Ray worker otherwise makes while it imports ray
    (see ``_worker_path/rfc3987_syntax``), then ``current`` (default: this process's).
    ``fusionkit worker-path`` prints it, for ``ray start`` on the nodes of a cluster."""
    current = os.environ.get("PYTHONPATH", "") if current is None else current
    rest = [p for p in current.split(os.pathsep) if p and p != WORKER_PATH]
    return os.pathsep.join([WORKER_PATH, *rest])


@contextmanager
def _worker_environment():
    """While a local Ray starts: its raylet, and so every worker it starts, inherits this
    process's environment. ``FUSIONKIT_WORKER_PATH=0`` leaves the workers' path alone."""
    if os.environ.get("FUSIONKIT_WORKER_PATH", "1") == "0":
        yield
        return
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = worker_pythonpath(before)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


LOOPBACK = "127.0.0.1"


@contextmanager
def _loopback_node():
    """While a local Ray of our own starts: its node's address is 127.0.0.1, so its GCS,
    raylet, agents and every worker listen on the loopback interface only.

    Ray 2.60 binds each server to its node's address, but a loopback address widened: with
    the machine's address (what ``ray.init`` picks on Linux) the GCS, the raylet, the
    dashboard agent and every worker listened on all interfaces (``*:PORT``), and
    ``ray.init(_node_ip_address="127.0.0.1")`` changes nothing, since ``ray.init`` replaces a
    loopback address by the machine's. It keeps it where Ray's switch for a single-machine
    Ray is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows);
    it is read when ray is imported, so the switch is turned here, for the start only.
    Measured with ``ss -ltnp``: every listener of the Ray is then on 127.0.0.1."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _is_loopback(address: str) -> bool:
    """Whether ``address`` (``host:port``) is on this machine's loopback interface. Joining
    a Ray that listens there (``fk.connect()``'s own, or a ``ray start`` of docs/cluster.md)
    needs Ray's switch too: without it ``ray.init`` dials the machine's address instead."""
    from ray._common.network_utils import is_localhost, parse_address

    parsed = parse_address(address)  # None for "auto" and "ray://...": left alone
    return parsed is not None and is_localhost(parsed[0])


START_ATTEMPTS = 3  # a busy machine can make Ray's own 30 s node start-up wait run out


def _init(kwargs: dict[str, Any], local: bool) -> None:
    """``ray.init``. A local Ray of our own starts with ``_worker_environment``, and one whose
    node timed out starting (a loaded machine) is started again, a few times, before giving up."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            if local:
                with _worker_environment(), _loopback_node():
                    ray.init(**kwargs)
            elif _is_loopback(kwargs["address"]):  # kept as given, to reach a loopback Ray
                with _loopback_node():
                    ray.init(**kwargs)
            else:
                ray.init(**kwargs)
            return
        except Exception as exc:
            if not local or attempt == START_ATTEMPTS or "timed out during startup" not in str(exc):
                raise
            log.warning("fusionkit: the local Ray node was slow to start (%s); trying again "
                        "(%d of %d)", exc, attempt + 1, START_ATTEMPTS)
            ray.shutdown()
            _end_children()  # what the attempt started is not ours to keep


def _end_children() -> None:
    """End this process's Ray children (the processes of a local Ray that failed to start;
    no Ray of ours runs at that point). Other children, such as a server the notebook
    started, are left alone."""
    import psutil

    def is_ray(p: psutil.Process) -> bool:
        try:
            cmd = " ".join(p.cmdline())
            return p.name() in ("gcs_server", "raylet") or "ray::" in cmd or "/ray/" in cmd
        except psutil.Error:
            return False

    children = [p for p in psutil.Process().children(recursive=True) if is_ray(p)]
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass


def connect(address: str | None = None, *, num_cpus: int | None = None,
            storage: str | None = None, worker_output: bool = False,
            checkpoint_every: float | None = 5.0,
            namespace: str = NAMESPACE) -> Connection:
    """Connect to Ray and to the pipeline's controller, starting either if needed.

    With no ``address`` a local Ray is started with settings for a laptop: listening on
    127.0.0.1 only (see ``_loopback_node``), no dashboard process, deduplicated logs, worker output kept out of the notebook (``worker_output=True``
    shows it), fusionkit's worker path first on its workers' PYTHONPATH (each starts ~1 s
    sooner; see ``worker_pythonpath``). ``address="auto"`` or ``"ray://host:10001"`` joins an existing cluster. Calling
    it again returns the same connection. Pipelines are checkpointed every
    ``checkpoint_every`` seconds under ``storage`` (``None``: only on ``fk.checkpoint()``).
    """
    global _conn
    with _lock:
        if _conn is not None and ray.is_initialized():
            return _conn
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = dict(namespace=namespace, logging_level=logging.ERROR,
                                          log_to_driver=worker_output)
            if address is None:
                # "local": a new Ray of our own, even where `ray start` left a cluster that
                # a bare ray.init() would join
                kwargs.update(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1),
                              include_dashboard=False, _node_ip_address=LOOPBACK)
                started = True
            else:
                kwargs["address"] = address
            _init(kwargs, local=started)
        storage = storage or default_storage()
        from fusionkit.control.controller import Controller, on_head

        controller = (ray.remote(Controller)
                      .options(name=CONTROLLER, namespace=NAMESPACE, lifetime="detached",
                               get_if_exists=True, num_cpus=0, max_concurrency=64,
                               max_restarts=-1,  # comes back with its stage table
                               **on_head())  # a worker node's loss leaves it alone
                      .remote(storage, checkpoint_every))
        refused = ray.get(controller.ping.remote()).get("storage_error")
        if refused:  # a storage folder signed by another key (fusionkit._signing)
            ray.kill(controller, no_restart=True)
            if started:  # its workers have the wrong key: a new connect() starts afresh
                ray.shutdown()
            raise StorageKeyError(refused)
        ray.get(controller.wait_warm.remote())
        ctx = ray.get_runtime_context()
        _conn = Connection(address=ctx.gcs_address, namespace=NAMESPACE, started_ray=started,
                           storage=storage, controller=controller)
        return _conn


def connection() -> Connection:
    """The current connection; raises ``NotConnectedError`` if there is none."""
    if _conn is None or not ray.is_initialized():
        raise NotConnectedError("not connected: call fusionkit.connect() first")
    return _conn


def _serve_running() -> bool:
    try:
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return True
    except Exception:
        return False


def shutdown() -> None:
    """Stop every stage, the controller, and the local Ray if ``connect()`` started it.

    Quietly: Ray prints every call still waiting on an actor that is killed ("Task
    ServeController.graceful_shutdown failed ... killed by ray.kill"), so Serve goes last,
    once the controller that held handles to it is gone. A local Ray of our own takes Serve
    down with it; Serve on a cluster that outlives this process is told to shut down and
    waited for (``serving.deploy.shutdown``).
    """
    global _conn
    _stop_notebook_updates()
    with _lock:
        conn, _conn = _conn, None
        if conn is None:
            return
        try:
            ray.get(conn.controller.stop.remote(), timeout=30)
        except Exception as exc:  # a dead controller has nothing left to stop
            log.debug("stopping stages: %s", exc)
        try:  # spare hosts, the registry and the monitor are detached: end them too
            ray.get(conn.controller.close.remote(), timeout=30)
        except Exception as exc:
            log.debug("closing the controller: %s", exc)
        try:
            ray.kill(conn.controller, no_restart=True)
        except Exception:
            pass
        if conn.started_ray:
            ray.shutdown()  # Serve's processes end with the rest of the local Ray
        elif _serve_running():
            from fusionkit.serving.deploy import shutdown as serve_shutdown

            serve_shutdown()


def _stop_notebook_updates() -> None:
    """End the dashboard's and the live views' updates, if this kernel has them, before Ray
    goes: a call of their threads on a handle after ``ray.shutdown()`` makes Ray start a new
    local instance from that thread (its auto-init), which outlives the shutdown."""
    import sys

    for name in ("fusionkit.notebook.dashboard", "fusionkit.notebook.live"):
        module = sys.modules.get(name)
        if module is not None:
            try:
                module.stop_updates()
            except Exception as exc:  # a view that cannot close must not stop the shutdown
                log.debug("stopping the updates of %s: %s", name, exc)


RESTART_WAIT = 120.0  # how long a call waits for a controller that Ray is restarting


def _controller_exists() -> bool:
    """Whether the named controller is alive or being restarted (not gone for good)."""
    try:
        ray.get_actor(CONTROLLER, namespace=NAMESPACE)
        return True
    except ValueError:
        return False


def call(method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """Call a controller method; re-raise its own error (not Ray's wrapper) in the caller.

    If the controller's process dies, Ray restarts it and it reads its stage table back;
    the call is sent again once it answers (every controller method may be repeated).
    """
    deadline = time.monotonic() + (timeout if timeout is not None else RESTART_WAIT)
    while True:
        ref = getattr(connection().controller, method).remote(*args, **kwargs)
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.RayTaskError as err:
            raise cause_of(err) from None
        except ray.exceptions.RayActorError:
            if time.monotonic() > deadline or not _controller_exists():
                raise
            time.sleep(0.2)


def handles() -> dict[str, Any]:
    """The handles of the pipeline's shared actors (``monitor``, ``registry``)."""
    return call("handles")


@dataclass(frozen=True)
class ControllerInfo:
    """What the pipeline's controller reports about itself, at one moment.

    The controller is the named actor that owns every stage; Ray restarts it when its
    process dies and it reads its stage table back, so ``restarts`` counts those restarts
    and ``pid`` changes with each. ``stages`` maps each stage's name, in the order they were
    defined, to the Ray actor ids of its actors (a stream stage's reader first), the ids
    Ray's own tools show; ``warm_hosts`` are the ids of the spare processes kept ready so
    that defining a stage is quick. ``storage`` is the folder of checkpoints and model
    versions, ``started`` the time (``time.time()``) its current process started.

    >>> info = ControllerInfo(pid=4242, restarts=0, started=0.0, storage="/tmp/fk",
    ...                       stages={"clicks": ("a1", "a2")}, warm_hosts=("h1",))
    >>> info.stages["clicks"]
    ('a1', 'a2')
    >>> info.restarts = 1
    Traceback (most recent call last):
    ...
    dataclasses.FrozenInstanceError: cannot assign to field 'restarts'
    """

    pid: int
    restarts: int
    started: float
    storage: str
    stages: dict[str, tuple[str, ...]] = field(hash=False)
    warm_hosts: tuple[str, ...] = ()


def controller_info() -> ControllerInfo:
    """What the pipeline's controller reports about itself (``ControllerInfo``).

    A call made while Ray restarts the controller waits for it to answer again, so after
    killing its process this returns the restarted one's report.

    On a connected cluster (not a doctest: it needs one), ``fk.controller_info().restarts``
    is ``0`` until the controller's process is first restarted.
    """
    ping = call("ping")
    table = call("actors")  # per stage, and "(spare)": no stage name has parentheses
    return ControllerInfo(pid=call("pid"), restarts=int(ping["restarts"]),
                          started=ping["started"], storage=ping["storage"],
                          stages={k: tuple(v) for k, v in table.items() if k != "(spare)"},
                          warm_hosts=tuple(table.get("(spare)", ())))


def wait_warm(timeout: float = 60.0) -> int:
    """Wait until the controller's pool of warm processes is full again; return its size.

    ``connect()`` waits once, so the first stage is quick; each stage defined since took
    warm processes, and the new ones start beside the running stages (importing pandas and
    River on the same cores). Wait before timing anything that should not pay for that.

    On a connected cluster (not a doctest: it needs one), ``fk.wait_warm()`` returns the
    pool's size, e.g. ``3``.
    """
    return call("wait_warm", timeout, timeout=timeout + 10)
