"""Where a stage's actors run: Ray options from its placement hints.

A stage may ask for resources (``resources={"GPU": 1}``) and to be spread over the nodes
(``placement="spread"``). These functions turn the hints into Ray actor options, check at
once that some live node offers them (Ray would keep the actors pending for ever), and keep
the controller's own actors on the head node, so losing a worker node costs only stage
actors.
"""

from __future__ import annotations

from typing import Any

import ray

from fusionkit.errors import FusionError

HEAD_RESOURCE = "node:__internal_head__"
SPREAD_CPU = 0.01  # a spread host's CPU: Ray 2.60 ignores a soft node affinity of 0-CPU actors


def placement(spec: Any) -> dict[str, Any]:
    """Ray options for a stage's hosts from its placement hints: ``resources`` (every actor
    of the stage asks for them; CPU, GPU and memory become Ray's own options) and
    ``placement="spread"`` (marked ``SPREAD`` here; ``host_options`` gives each host its
    node). Empty: no hints, warm pool hosts do. Ray keeps these options when it restarts a
    host, on whichever node offers them."""
    options: dict[str, Any] = {}
    resources = dict(getattr(spec, "resources", None) or {})
    for key, option in (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")):
        if key in resources:
            options[option] = resources.pop(key)
    if resources:
        options["resources"] = resources
    if getattr(spec, "placement", "pack") == "spread":
        options["scheduling_strategy"] = "SPREAD"
    return options


def host_options(options: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Options for ``count`` hosts of a stage. With ``placement="spread"`` each host gets the
    next of the live nodes that offer what the stage asks for, in turn, as a soft node
    affinity: a host whose node is gone or full goes elsewhere (Ray's own SPREAD is best
    effort and put all four actors of a stage on one node of three)."""
    if options.get("scheduling_strategy") != "SPREAD":
        return [options] * count
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    base = {**options, "num_cpus": options.get("num_cpus") or SPREAD_CPU}
    nodes = sorted(n["NodeID"] for n in _offering(_needs(base)))
    if not nodes:
        return [options] * count
    return [{**base, "scheduling_strategy":
             NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)}
            for i in range(count)]


def _needs(options: dict[str, Any]) -> dict[str, float]:
    """The resources a host started with ``options`` asks Ray for."""
    need = dict(options.get("resources", {}))
    for key, option in (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")):
        if options.get(option):
            need[key] = options[option]
    return need


def _offering(need: dict[str, float]) -> list[dict[str, Any]]:
    """The live nodes that offer ``need``."""
    return [n for n in ray.nodes() if n.get("Alive")
            and all(n["Resources"].get(k, 0) >= v for k, v in need.items())]


def check_feasible(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error at once if no live node offers what a stage's actors ask for
    (Ray would keep them pending for ever)."""
    need = _needs(options)
    if not need or _offering(need):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offered = sorted({k for n in nodes for k in n["Resources"]
                      if not k.startswith("node:") and not k.startswith("object_store")})
    raise FusionError(f"no node of the cluster offers the resources stage {name!r} asks for "
                      f"({need}); the nodes offer: {', '.join(offered) or 'nothing'}. Start a "
                      f"node with them (ray start --resources='{{\"name\": 1}}') or change "
                      f"resources=")


def on_head() -> dict[str, Any]:
    """Ray options that keep an actor on the head node: the controller, the registry and
    the monitor, so that losing a worker node costs only the stage actors it held. A sliver
    of the head's own resource (Ray 2.60 placed zero-CPU actors with a soft node affinity
    on any node). Empty if there is no head (a cluster that lost it)."""
    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in node.get("Resources", {}):
            return {"resources": {HEAD_RESOURCE: 0.001}}
    return {}
