"""The Ray actor classes of fusionkit, with the options they all share.

Every actor asks for zero CPUs: they are long-lived loops that mostly wait, and a laptop's
few logical CPUs stay free for the user's own Ray tasks.
"""

from __future__ import annotations

import functools
from typing import Any

import ray

from fusionkit.monitor.monitor import Monitor
from fusionkit.registry.actor import RegistryActor
from fusionkit.runtime.names import CONTROLLER, MONITOR, NAMESPACE, REGISTRY

__all__ = ["CONTROLLER", "MONITOR", "NAMESPACE", "REGISTRY", "MonitorActor", "Registry",
           "host_class"]

# restarted by Ray if their process dies: the registry reloads its models from disk, the
# monitor starts new series, a stage host becomes its actor again; every handle to them
# stays valid
MonitorActor = ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1)(Monitor)
Registry = ray.remote(num_cpus=0, max_concurrency=256, max_restarts=-1)(RegistryActor)


@functools.cache
def host_class() -> Any:
    """The stage host actor class, built on first use: it imports every worker (River's
    metrics and SciPy: about a second), which a driver importing the controller never needs."""
    from fusionkit.control.host import StageHost

    return ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1)(StageHost)
