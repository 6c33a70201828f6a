"""Deploying a serve stage on Ray Serve, and operating it."""

from __future__ import annotations

import logging
from typing import Any

from fusionkit.errors import FusionError
from fusionkit.runtime.reports import ActorReport
from fusionkit.runtime.specs import ServeSpec

MAX_ONGOING = 64
QUIET = {"log_level": "WARNING", "enable_access_log": False}
FRONT = "-http"  # the retrying front's deployment: <stage name>-http


def _serve():
    from ray import serve

    return serve


def _app(spec: ServeSpec):
    """The stage's application: its model replicas (deployment ``spec.name``), behind a
    retrying HTTP front (deployment ``<name>-http``) when ``spec.front``."""
    serve = _serve()
    from fusionkit.serving.front import HttpFront
    from fusionkit.serving.replica import ModelServer

    options = dict(num_replicas=spec.replicas, max_ongoing_requests=MAX_ONGOING,
                   ray_actor_options={"num_cpus": 0}, health_check_period_s=2,
                   logging_config=QUIET)
    model = serve.deployment(ModelServer).options(name=spec.name, **options).bind(spec)
    if not spec.front:
        return model
    front = serve.deployment(HttpFront).options(name=f"{spec.name}{FRONT}", **options)
    return front.bind(model, spec)


def start(host: str = "127.0.0.1", port: int = 8000, app: str | None = None) -> None:
    """Start Ray Serve's controller and HTTP proxy (seconds the first time; no-op after).

    Serve has one HTTP address per cluster: if it already listens elsewhere and runs no
    application (other than ``app``, about to be replaced), it is restarted on the address
    asked for; if applications run there, this is refused with the address to use instead.
    """
    from ray.serve.context import _get_global_client

    serve = _serve()
    options = {"host": host, "port": port}
    serve.start(http_options=options, logging_config=QUIET)
    http = _get_global_client().http_config
    if (http.host, http.port) == (host, port):
        return
    apps = [a for a in serve.status().applications if a != app]
    if apps:
        raise FusionError(
            f"Ray Serve already answers on {http.host}:{http.port} for {', '.join(apps)}; "
            f"every serve stage shares that address: pass host={http.host!r}, "
            f"port={http.port} (or stop those stages first)")
    serve.shutdown()
    serve.start(http_options=options, logging_config=QUIET)


def deploy(spec: ServeSpec) -> dict[str, Any]:
    """Start Serve on ``spec.host:spec.port`` if needed and run the stage's application."""
    serve = _serve()
    start(spec.host, spec.port, app=spec.name)
    serve.run(_app(spec), name=spec.name, route_prefix=spec.route, blocking=False)
    return {"url": f"http://{spec.host}:{spec.port}{spec.route}", "route": spec.route}


def scale(spec: ServeSpec) -> None:
    serve = _serve()
    serve.run(_app(spec), name=spec.name, route_prefix=spec.route, blocking=False)


def undeploy(spec: ServeSpec) -> None:
    try:
        _serve().delete(spec.name)
    except Exception:
        pass


def forget_client() -> None:
    """Drop this process's cached Serve client (and the handles it caches).

    Serve keeps one client per process and does not notice when another process restarts
    Serve (``start`` does when a stage asks for another HTTP address): every call through
    the old client then fails with the old controller's ``ActorDiedError``.
    """
    from ray.serve.context import _set_global_client

    _set_global_client(None)


def handle(name: str):
    """A handle to serve stage ``name``'s model replicas (not its HTTP front, if it has
    one), through a live Serve controller."""
    import ray

    quiet_driver()

    try:
        return _serve().get_deployment_handle(name, app_name=name)
    except ray.exceptions.RayActorError:  # Serve was restarted by another process
        forget_client()
        return _serve().get_deployment_handle(name, app_name=name)


def quiet_driver() -> None:
    """Serve's logger in this process at WARNING, as fusionkit runs Serve's own processes
    (``QUIET``): a handle's first request logs "Started <...SharedRouterLongPollClient...>"
    at INFO, noise under a notebook cell. Left alone if the user set another level."""
    logger = logging.getLogger("ray.serve")
    if logger.level in (logging.NOTSET, logging.INFO):
        logger.setLevel(logging.WARNING)


def shutdown(timeout: float = 30.0) -> None:
    """Shut Ray Serve down, wherever its controller was started from, and wait until its
    controller is gone.

    Not ``serve.shutdown()``: that waits on a controller call that only ends when the
    controller kills itself, and Ray then prints the call as a failed task ("Task
    ServeController.graceful_shutdown failed ... killed by ray.kill"). The controller is told
    to shut down without a call left waiting on it, and this polls until it has.
    """
    import time

    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    def controller() -> Any:
        try:
            return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        except ValueError:
            return None

    forget_client()  # a client cached before a restart would find "nothing to shut down"
    actor = controller()
    if actor is None:
        return
    try:
        ray.get(actor.graceful_shutdown.remote(False), timeout=timeout)
    except ray.exceptions.RayActorError:
        return
    deadline = time.monotonic() + timeout
    while controller() is not None:
        if time.monotonic() > deadline:
            ray.kill(actor, no_restart=True)
            return
        time.sleep(0.1)


def replica_infos(spec: ServeSpec) -> list[ActorReport]:
    """One report per replica, shaped like the stage actors' ``info()``; the first carries
    the totals of the replica that answered."""
    serve = _serve()
    try:
        app = serve.status().applications.get(spec.name)
    except Exception as exc:
        return [ActorReport(stage=spec.name, status="failed", error=str(exc))]
    if app is None:
        return [ActorReport(stage=spec.name, status="stopped")]
    state = str(app.status.value if hasattr(app.status, "value") else app.status)
    status = {"RUNNING": "running", "DEPLOYING": "starting", "DEPLOY_FAILED": "failed",
              "UNHEALTHY": "failed", "DELETING": "stopped"}.get(state, state.lower())
    error = app.message if status == "failed" else None
    try:
        totals = handle(spec.name).report.remote().result(timeout_s=2).totals
    except Exception:
        totals = {}
    return [ActorReport(stage=spec.name, index=i, status=status, error=error,
                        traceback=error or "", totals=totals if i == 0 else {})
            for i in range(spec.replicas)]


