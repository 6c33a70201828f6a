"""The Ray actor classes of fusionkit, with the options they all share.

Every actor asks for zero CPUs: they are long-lived loops that mostly wait, and a laptop's
few logical CPUs stay free for the user's own Ray tasks.
"""

from __future__ import annotations

import ray

from fusionkit.control.host import StageHost
from fusionkit.monitor.monitor import Monitor
from fusionkit.registry.actor import RegistryActor
from fusionkit.runtime.names import CONTROLLER, MONITOR, NAMESPACE, REGISTRY

__all__ = ["CONTROLLER", "MONITOR", "NAMESPACE", "REGISTRY", "Host", "MonitorActor", "Registry"]

# restarted by Ray if their process dies: the registry reloads its models from disk, the
# monitor starts new series; every handle to them stays valid
MonitorActor = ray.remote(num_cpus=0, max_concurrency=16, max_restarts=-1)(Monitor)
Registry = ray.remote(num_cpus=0, max_concurrency=256, max_restarts=-1)(RegistryActor)
Host = ray.remote(num_cpus=0, max_concurrency=64, max_restarts=-1)(StageHost)
