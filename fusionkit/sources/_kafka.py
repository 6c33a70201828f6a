"""What the Kafka source and sink share: the client, imported on first use; and which
partitions of a topic a source reads.

A source names one partition, several, or ``"all"``; a stage with ``parallelism=N`` gives
each of its N actors every N-th of them (``Kafka.share``), so that every partition is read
by exactly one actor.
"""

from __future__ import annotations

from collections.abc import Sequence

from fusionkit._optional import require

__all__ = ["choose_partitions", "kafka_module", "nth", "parse_partitions"]


def kafka_module():
    """``confluent_kafka``, imported on first use with a clear error if it is missing."""
    return require("confluent_kafka", "kafka", "the Kafka source and sink", "confluent-kafka")


def parse_partitions(value: Sequence[int] | str | None) -> tuple[int, ...] | str | None:
    """``partitions=`` as ``None``, ``"all"`` or a tuple of partition numbers."""
    if value is None or value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    elif isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        parts = tuple(int(p) for p in value)
    except (TypeError, ValueError):
        raise ValueError(f"partitions must be 'all' or partition numbers, got {value!r}") from None
    if not parts or any(p < 0 for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"partitions must be distinct partition numbers, got {value!r}")
    return parts


def choose_partitions(wanted: list[int], have: list[int], share: tuple[int, int], topic: str,
                      where: str) -> list[int]:
    """The partitions one actor reads: every ``count``-th of ``wanted`` from the ``index``-th
    (``share``), once all of them proved to be among the topic's ``have``."""
    missing = [p for p in wanted if p not in have]
    if missing or not wanted:
        which = ", ".join(map(str, missing)) if missing else "any"
        raise ValueError(f"{where} has no partition {which} of topic {topic!r} "
                         f"(partitions: {have or 'none'})")
    index, count = share
    mine = wanted[index::count]
    if not mine:
        raise ValueError(f"topic {topic!r} at {where} has {len(wanted)} partitions to "
                         f"read: actor {index + 1} of {count} would read none; use a "
                         f"parallelism of at most {len(wanted)}")
    return mine


def nth(k: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``21st`` ..."""
    return f"{k}{'th' if 10 <= k % 100 < 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"
