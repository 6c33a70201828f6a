"""The Ray actor classes of fusionkit, with the options they all share.

Every actor asks for zero CPUs: they are long-lived loops that mostly wait, and a laptop's
few logical CPUs stay free for the user's own Ray tasks.
"""

from __future__ import annotations

import ray

from fusionkit.monitor.monitor import Monitor
from fusionkit.runtime.registry_actor import RegistryActor
from fusionkit.runtime.stream_worker import StreamWorker
from fusionkit.runtime.train_worker import TrainWorker

NAMESPACE = "fusionkit"
CONTROLLER = "fusionkit-controller"
MONITOR = "fusionkit-monitor"
REGISTRY = "fusionkit-registry"

MonitorActor = ray.remote(num_cpus=0, max_concurrency=16)(Monitor)
Registry = ray.remote(num_cpus=0, max_concurrency=256)(RegistryActor)
StreamActor = ray.remote(num_cpus=0, max_concurrency=64)(StreamWorker)
TrainActor = ray.remote(num_cpus=0, max_concurrency=64)(TrainWorker)
