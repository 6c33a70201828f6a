"""Shared fixtures: one real local Ray for the whole test session."""

from __future__ import annotations

import os
import time

import pytest
from hypothesis import settings

from fusionkit.connect import worker_pythonpath

os.environ.setdefault("FUSIONKIT_HOME", os.path.join(os.getcwd(), ".pytest-fusionkit"))

# The processes the tests start (Jupyter servers and kernels, `ray start`, the nodes of
# ray.cluster_utils clusters) get fusionkit's worker path, as docs/cluster.md tells users to
# start their nodes; fk.connect() gives it to the local Rays it starts by itself.
os.environ["PYTHONPATH"] = worker_pythonpath()

# CI runs the same examples of every property test each time (a run is green or red for the
# code, not for the draw); locally hypothesis explores new ones and keeps what failed
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# notebooks the tests drive themselves (the deliberately failing one, the browser test's
# demo) are not tutorials for nbval to collect
collect_ignore_glob = ["notebooks/*.ipynb", "browser/*.ipynb"]


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Wait until ``predicate()`` is truthy; return its value, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


def wait_restarted(actor, pid: int, what: str, timeout: float = 90.0) -> None:
    """Wait until ``actor`` answers ``pid()`` from a process other than ``pid`` (Ray has
    restarted it after a kill)."""
    import ray

    def restarted() -> bool:
        try:
            return ray.get(actor.pid.remote(), timeout=10) != pid
        except ray.exceptions.RayActorError:  # still restarting
            return False

    wait_for(restarted, timeout=timeout, what=what)


def learn_through_a_kill(fk, produce, starts, victim, learned, n: int) -> None:
    """Broker tests' kill mid-run: ``produce(start)`` writes a chunk of events from a thread
    (a steady stream, so the kill lands mid-run), for each of ``starts``; once 3,000 events
    are ``learned()`` take a checkpoint, at 6,000 SIGKILL the process ``victim(infos)``
    picks among the stream's actors; then wait for the recovery and all ``n`` learned."""
    import signal
    import threading

    done = threading.Event()

    def producer():
        for start in starts:
            produce(start)
            if done.wait(0.02):
                return

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    try:
        wait_for(lambda: learned() >= 3000, timeout=90, what="events learned")
        assert fk.checkpoint() is not None
        wait_for(lambda: learned() >= 6000, timeout=90, what="more learned")
        os.kill(victim(fk.infos("events"))["pid"], signal.SIGKILL)
        wait_for(lambda: len(fk.recoveries()) > 0, timeout=90, what="a recovery")
        thread.join(timeout=120)
        wait_for(lambda: learned() >= n, timeout=120, what="every event learned after recovery")
    finally:
        done.set()


def first_fused(infos: list[dict]) -> dict:
    """The (first) actor that reads the source and runs the chain."""
    return next(i for i in infos if i.get("role") == "fused")


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (tests/integration/_pipelines.py), for
    one test; the test is skipped where redis-py or the redis-server binary is missing."""
    import shutil

    pytest.importorskip("redis")
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server")
    from _pipelines import RedisServer  # tests/integration is on the path of its tests

    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


LAST_USER = pytest.StashKey[object]()


def pytest_collection_modifyitems(session, config, items):
    """Note the last test that uses the shared Ray (see ``pytest_runtest_teardown``)."""
    users = [item for item in items if "fk_session" in getattr(item, "fixturenames", ())]
    config.stash[LAST_USER] = users[-1] if users else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After the last test that uses the shared Ray, shut it down: the tests after it
    (multi-node clusters, notebooks, the browser) start Rays of their own and get the
    machine to themselves."""
    yield
    if nextitem is not None and item is item.config.stash.get(LAST_USER, None):
        _release_session()


def _release_session() -> None:
    import fusionkit as fk

    fk.shutdown()  # idempotent: the session fixture's teardown calls it again


@pytest.fixture(scope="session")
def fk_session(tmp_path_factory):
    """A connected fusionkit on an embedded Ray, shared by every test that asks for it
    (and shut down after the last of them)."""
    import ray

    import fusionkit as fk

    storage = tmp_path_factory.mktemp("storage")
    for attempt in range(3):  # a busy machine can miss Ray's fixed 30 s node start-up window
        try:
            conn = fk.connect(storage=str(storage))
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield conn
    _release_session()


@pytest.fixture()
def fk(fk_session, request):
    """fusionkit with a clean pipeline: every stage is stopped after the test.

    Classes and functions defined in the test module travel to the actors by value (as
    they would from a notebook's ``__main__``), since the workers cannot import test modules.
    """
    import ray.cloudpickle

    import fusionkit

    ray.cloudpickle.register_pickle_by_value(request.module)
    yield fusionkit
    fusionkit.stop()
