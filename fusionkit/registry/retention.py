"""Retention: which versions keep their state in memory, and which a registry remembers.

A registry keeps the state bytes of its last ``keep`` versions in memory, and remembers
(records and files) its last ``retain`` versions; the live and the pinned version are
always kept and remembered. So a model that publishes every 50 ms for days keeps a bounded
folder, memory and checkpoint, while older records stay for lineage up to ``retain``.

>>> sorted(in_memory([1, 2, 3, 4, 5], keep=2, live=1, pinned=None))
[1, 4, 5]
>>> forgotten([1, 2, 3, 4, 5], retain=3, live=1, pinned=None)
[2, 3]
"""

from __future__ import annotations

__all__ = ["forgotten", "in_memory"]


def in_memory(versions: list[int], keep: int, live: int | None, pinned: int | None) -> set[int]:
    """The versions (of ``versions``, sorted) whose state stays in memory."""
    return set(versions[-keep:]) | {v for v in (live, pinned) if v is not None}


def forgotten(versions: list[int], retain: int, live: int | None,
              pinned: int | None) -> list[int]:
    """The oldest versions (of ``versions``, sorted) beyond the last ``retain``, never the
    live or the pinned one: their records and files are to be removed."""
    extra = len(versions) - retain
    if extra <= 0:
        return []
    return [v for v in versions if v not in (live, pinned)][:extra]
