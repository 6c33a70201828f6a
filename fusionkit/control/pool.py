"""The stage hosts: a warm pool of spare processes, and what each host became.

Starting a Ray actor costs a process and its imports (seconds), so the pool keeps
``SPARE_HOSTS`` hosts started and ready; defining a stage takes them and a new spare is
started in the background. Hosts are detached and named (``fk-host-<hex>``), so a restarted
controller finds them by name, and the pool remembers what each was asked to become, so a
host Ray restarts can be told again (``Controller.host_restarted``): its
:class:`~fusionkit.runtime.records.Assignment`.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import ray

from fusionkit._clock import now
from fusionkit._rpc import cause_of, through_restart
from fusionkit.control.actors import NAMESPACE, host_class
from fusionkit.control.placement import host_options
from fusionkit.errors import FusionError
from fusionkit.runtime.records import Assignment

SPARE_HOSTS = 3  # warm processes kept ready, so defining a stage does not wait for one
PLACE_TIMEOUT = 120.0  # how long a stage with placement hints waits for a node with room
HOST_PREFIX = "fk-host-"  # stage hosts are named, so a restarted controller finds them


def aid(actor: Any) -> str:
    """An actor's id, as the controller keys its hosts."""
    return actor._actor_id.hex()


def wait_ready(actor: Any, timeout: float = 120.0) -> None:
    """Wait for an actor that Ray may still be restarting."""
    deadline = now() + timeout
    through_restart(lambda: ray.get(actor.ready.remote(), timeout=max(1.0, deadline - now())),
                    timeout)


def new_host(options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """A detached, named stage host: it outlives a controller restart (then is adopted).
    ``options``: Ray options from a stage's placement hints (``placement.placement``)."""
    name = f"{HOST_PREFIX}{uuid.uuid4().hex[:16]}"
    return host_class().options(name=name, namespace=NAMESPACE, lifetime="detached",
                        **(options or {})).remote(), name


class HostPool:
    """The warm spares, the name of every host started or adopted, and the assignment each
    host was given (``assignments``: what it becomes again after a restart)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}  # actor id -> host name
        self.assignments: dict[str, Assignment] = {}  # actor id -> what it became
        self.spares: list[Any] = []
        self.lock = threading.Lock()
        self.closing = False
        self._want = threading.Event()
        self._want.set()

    def start(self) -> None:
        """Keep the pool full from now on, in a thread of its own."""
        threading.Thread(target=self._refill, daemon=True, name="fk-pool").start()

    def _refill(self) -> None:
        while True:
            self._want.wait()
            self._want.clear()
            if self.closing:
                return
            missing = SPARE_HOSTS - len(self.spares)
            hosts = [self.host() for _ in range(missing)]
            for host in hosts:  # started together, taken as each becomes ready
                try:
                    ray.get(host.ready.remote())
                except Exception:
                    continue
                with self.lock:
                    self.spares.append(host)

    def host(self, options: dict[str, Any] | None = None) -> Any:
        """A new host (not from the pool), named and remembered."""
        actor, name = new_host(options)
        self.names[aid(actor)] = name
        return actor

    def reserve(self, need: int) -> None:
        """Start, all at once, the spares ``need`` hosts taken soon will miss."""
        with self.lock:
            short = need - len(self.spares)
        if short > 0:
            started = [self.host() for _ in range(short)]
            with self.lock:
                self.spares = self.spares + started

    def hosts(self, assignments: list[Assignment], options: dict[str, Any] | None = None,
              fresh: list[Any] | None = None) -> list[Any]:
        """One actor per assignment: from the warm pool where possible, or, for a stage
        with placement hints (``options``), hosts started with them (``fresh``: started
        already). Hosts a placement hint keeps pending too long are ended with a clear error."""
        n = len(assignments)
        if options:
            taken = list(fresh or [])
            taken += [self.host(o) for o in host_options(options, n - len(taken))]
        else:
            with self.lock:
                taken, self.spares = self.spares[:n], self.spares[n:]
            taken += [self.host() for _ in range(n - len(taken))]
            self._want.set()
        refs = [h.become.remote(a) for h, a in zip(taken, assignments, strict=True)]
        for h, a in zip(taken, assignments, strict=True):
            self.assignments[aid(h)] = a
        try:
            ray.get(refs, timeout=PLACE_TIMEOUT if options else None)
        except ray.exceptions.GetTimeoutError:
            for h in taken:
                ray.kill(h, no_restart=True)
            raise FusionError(f"the actors of stage {assignments[0].spec.name!r} were not placed "
                              f"within {PLACE_TIMEOUT:.0f}s: no node has room for {options} now "
                              f"(other actors hold the resources, or the node is gone)") from None
        except ray.exceptions.RayTaskError as err:
            for h in taken:
                ray.kill(h, no_restart=True)
            raise cause_of(err) from None
        return taken

    def respec(self, actors: list[Any], spec: Any) -> None:
        """These hosts' stage has a new spec (paused, waiting, a drift watch): a host Ray
        restarts becomes it with that one."""
        for actor in actors:
            a = self.assignments.get(aid(actor))
            if a is not None:
                self.assignments[aid(actor)] = a.but(spec=spec)

    def wait_warm(self, timeout: float = 60.0) -> int:
        """Wait until the warm pool is full; return how many spares it holds."""
        deadline = now() + timeout
        while len(self.spares) < SPARE_HOSTS and now() < deadline:
            threading.Event().wait(0.1)
        return len(self.spares)

    def name_of(self, actor: Any) -> str | None:
        return self.names.get(aid(actor))

    def lookup(self, name: str) -> Any:
        """The live host of that name (``ValueError`` if it is gone), remembered."""
        actor = ray.get_actor(name, namespace=NAMESPACE)
        self.names[aid(actor)] = name
        return actor

    def close(self) -> None:
        """End the spares; no new ones are started."""
        self.closing = True
        with self.lock:
            spares, self.spares = self.spares, []
        for actor in spares:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass

    @staticmethod
    def kill_orphans(keep: set[str]) -> None:
        """End every stage host of this namespace not named in ``keep`` (spares of a
        controller that died, hosts of a definition it did not finish)."""
        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception:
            return
        for entry in named:
            name = entry.get("name", "")
            if (entry.get("namespace") == NAMESPACE and name.startswith(HOST_PREFIX)
                    and name not in keep):
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except Exception:
                    pass
