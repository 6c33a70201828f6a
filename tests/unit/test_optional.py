"""Optional dependencies come through one helper (``fusionkit._optional.require``): a missing
one is a FusionError and an ImportError whose message says which extra installs it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import fusionkit
from fusionkit._optional import require
from fusionkit.errors import FusionError, MissingDependencyError
from fusionkit.sources._kafka import kafka_module
from fusionkit.sources._redis import redis_module

ROOT = Path(fusionkit.__file__).parent


def test_a_module_that_is_not_installed_is_a_clear_error():
    with pytest.raises(MissingDependencyError) as caught:
        require("fusionkit_no_such_module", "kafka", "the Kafka source and sink", "confluent-kafka")
    assert str(caught.value) == ("the Kafka source and sink need the 'confluent-kafka' package: "
                                 "pip install 'fusionkit[kafka]'")
    assert isinstance(caught.value, ImportError) and isinstance(caught.value, FusionError)
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_an_installed_module_is_returned():
    import json

    assert require("json", "none", "the tests") is json
    assert kafka_module().__name__ == "confluent_kafka"
    assert redis_module().__name__ == "redis"


@pytest.mark.parametrize("connector, module, message", [
    (kafka_module, "confluent_kafka",
     "the Kafka source and sink need the 'confluent-kafka' package: pip install 'fusionkit[kafka]'"),
    (redis_module, "redis",
     "the Redis source and sink need the 'redis' package: pip install 'fusionkit[redis]'"),
])  # fmt: skip
def test_the_connectors_name_their_extra(monkeypatch, connector, module, message):
    """With the client library not importable (``sys.modules[name] = None`` is how Python
    marks a module that cannot be imported), each connector says how to install it."""
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match="pip install") as caught:
        connector()
    assert str(caught.value) == message


def test_the_install_hint_is_written_once():
    holders = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                     if "pip install 'fusionkit[" in p.read_text())  # fmt: skip
    assert holders == ["_optional.py"]
