"""Unpickling what an earlier fusionkit saved, after its classes moved to other modules.

A pickle names each class by module and name. A stage table (``stages.pkl``), a checkpoint,
a published model or a drift watch's state written before the rooms of fusionkit were
rearranged names classes where they lived then (``fusionkit.streaming.operators.Chain``,
``fusionkit.monitor.drift_watch.DriftSpec``, ``fusionkit.training.registry.Guard``); each is
looked up where it lives now. Everything else resolves as ``pickle`` would.

>>> from fusionkit.streaming.chain import Chain
>>> where_now("fusionkit.streaming.operators", "Chain") is Chain
True
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

# module of then -> the modules a class of it may live in now (looked in, in this order)
_MODULES: dict[str, tuple[str, ...]] = {
    "fusionkit.streaming.operators": ("fusionkit.streaming.chain", "fusionkit.streaming.keyed"),
    "fusionkit.training.learners": ("fusionkit.training.features", "fusionkit.training.protocol",
                                    "fusionkit.training.river_learner",
                                    "fusionkit.training.partial_fit_learner"),
    "fusionkit.training.registry": ("fusionkit.registry.store", "fusionkit.registry.records",
                                    "fusionkit.registry.guard", "fusionkit.registry.folder"),
    "fusionkit.runtime.registry_actor": ("fusionkit.registry.actor",),
    "fusionkit.runtime.stream_worker": ("fusionkit.streaming.worker",),
    "fusionkit.runtime.train_worker": ("fusionkit.training.worker",),
    "fusionkit.runtime.host": ("fusionkit.control.host",),
    "fusionkit.runtime.controller": ("fusionkit.control.table", "fusionkit.control.controller"),
    "fusionkit.streaming.windows": ("fusionkit.streaming.partials",),
    "fusionkit.sources.kafka": ("fusionkit.sources._kafka",),
    **{f"fusionkit.monitor.{old}": tuple(
        f"fusionkit.drift_detection.{home}" for home in
        ("spec", "monitor", "feature", "concept", "prediction", "reference", "ks", "records",
         "store", "watch", "detectors", "categories", "psi", "chi2", "ztest", "policy"))
       for old in ("drift", "drift_watch", "drift_stats", "drift_records", "drift_store",
                   "prediction_drift")},
}


def where_now(module: str, name: str) -> Any:
    """The object ``module.name`` of an earlier fusionkit, where it lives now."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        for home in _MODULES.get(module, ()):
            found = getattr(importlib.import_module(home), name, None)
            if found is not None:
                return found
        raise


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that finds a moved class where it lives now."""

    def find_class(self, module: str, name: str) -> Any:
        if module in _MODULES:
            return where_now(module, name)
        return super().find_class(module, name)


def loads(data: bytes) -> Any:
    """``pickle.loads``, also of what an earlier fusionkit saved (see the module's text)."""
    return Unpickler(io.BytesIO(data)).load()
