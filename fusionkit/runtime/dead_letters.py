"""Dead letters: the events a stage could not take, with the reason, bounded in bytes.

A dead letter is kept as ``{"time", "stage", "offset", "reason", "payload", "size"}``,
``size`` being the payload's size in bytes as it came. A stage's dead letters are part of
its actor's checkpointed state: a checkpoint covers their source offsets (a broker source
acknowledges them with the rest), so they must come back with the actor after a recovery,
or they would be gone for good. The store is bounded so it stays cheap to checkpoint:

- a payload larger than ``preview_bytes`` is kept as a text preview of its first
  ``preview_bytes`` characters (``truncated`` is then true; ``size`` keeps its real size);
- the store holds at most ``max_bytes`` (payloads, reasons and a fixed ``OVERHEAD`` per
  item counted): beyond it the oldest letters go, and ``dropped`` counts them.

``count`` is every dead letter the stage ever filed, kept or not.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pandas as pd

from fusionkit._clock import now

MAX_BYTES = 4 * 2**20  # the whole store, per actor
PREVIEW_BYTES = 1024  # of one payload
REASON_CHARS = 500
OVERHEAD = 256  # bytes counted per letter besides its payload and reason (the dict, numbers)


def _size(payload: Any) -> int:
    """Bytes of a payload as it came: text and bytes by length, a record by its values."""
    if isinstance(payload, (bytes, bytearray)):
        return len(payload)
    if isinstance(payload, str):
        return len(payload.encode("utf-8", "surrogatepass"))
    if isinstance(payload, dict):
        return sum(_size(k) + _size(v) for k, v in payload.items())
    if payload is None or isinstance(payload, (bool, int, float)):
        return 8
    return len(repr(payload)) if not hasattr(payload, "nbytes") else int(payload.nbytes)


def _preview(payload: Any, chars: int) -> str:
    """The first ``chars`` characters of a payload shown as text."""
    if isinstance(payload, (bytes, bytearray)):
        return repr(bytes(payload[:chars]))[:chars]
    if isinstance(payload, str):
        return payload[:chars]
    if isinstance(payload, dict):  # field by field, so a huge value is never copied whole
        parts, used = [], 0
        for k, v in payload.items():
            part = f"{_preview(k, chars)!r}: {_preview(v, chars)!r}"
            parts.append(part)
            used += len(part) + 2
            if used >= chars:
                break
        return ("{" + ", ".join(parts) + "}")[:chars]
    return repr(payload)[:chars]


class DeadLetters:
    """A store of a stage's dead letters bounded to ``max_bytes``, newest kept.

    Examples
    --------
    >>> d = DeadLetters("clicks", max_bytes=3000, preview_bytes=100)
    >>> d.add_raw("x" * 10_000, "too big", offset=7)
    >>> item = d.items()[0]
    >>> len(item["payload"]), item["size"], item["truncated"]
    (100, 10000, True)
    >>> for i in range(20):
    ...     d.add_raw("{bad", "invalid JSON", offset=i)
    >>> d.count, len(d), d.dropped, d.bytes <= 3000
    (21, 11, 10, True)
    >>> e = DeadLetters("clicks")
    >>> e.set_state(d.get_state())
    >>> e.items() == d.items() and e.dropped == d.dropped
    True
    """

    def __init__(self, stage: str, max_bytes: int = MAX_BYTES,
                 preview_bytes: int = PREVIEW_BYTES):
        if max_bytes < OVERHEAD + preview_bytes + REASON_CHARS:
            raise ValueError(f"max_bytes must hold at least one letter "
                             f"({OVERHEAD + preview_bytes + REASON_CHARS}), got {max_bytes}")
        self.stage = stage
        self.max_bytes = max_bytes
        self.preview_bytes = preview_bytes
        self._items: deque[tuple[dict[str, Any], int]] = deque()  # (letter, bytes counted)
        self.bytes = 0
        self.count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, rows: pd.DataFrame, reason: str | pd.Series) -> int:
        """File each row of ``rows`` (its ``_offset`` as the offset) with ``reason``."""
        if len(rows) == 0:
            return 0
        reasons = reason if isinstance(reason, pd.Series) else pd.Series(reason, index=rows.index)
        t = now()
        offsets = rows["_offset"] if "_offset" in rows else pd.Series(-1, index=rows.index)
        payload = rows.drop(columns=[c for c in ("_offset",) if c in rows])
        for rec, why, off in zip(payload.to_dict("records"), reasons, offsets, strict=True):
            self._put(t, int(off), str(why), rec)
        return len(rows)

    def add_raw(self, payload: Any, reason: str, offset: int = -1) -> None:
        """File one raw payload (what a source could not decode)."""
        self._put(now(), offset, reason, payload)

    def _put(self, t: float, offset: int, reason: str, payload: Any) -> None:
        size = _size(payload)
        letter = {"time": t, "stage": self.stage, "offset": offset,
                  "reason": reason[:REASON_CHARS], "payload": payload, "size": size,
                  "truncated": size > self.preview_bytes}
        if letter["truncated"]:
            letter["payload"] = _preview(payload, self.preview_bytes)
            size = _size(letter["payload"])
        cost = OVERHEAD + min(size, self.preview_bytes) + len(letter["reason"])
        self._items.append((letter, cost))
        self.bytes += cost
        self.count += 1
        while self.bytes > self.max_bytes:
            _, freed = self._items.popleft()
            self.bytes -= freed
            self.dropped += 1

    def items(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The letters kept, oldest first (the last ``limit`` of them)."""
        items = [letter for letter, _ in self._items]
        return items[-limit:] if limit else items

    @staticmethod
    def merge(states: list[dict[str, Any] | None]) -> dict[str, Any]:
        """One state holding the letters of several (a stage's actors, when the stage is
        scaled to another number of them), oldest first; counts add up. ``set_state`` keeps
        the newest that fit."""
        states = [s for s in states if s]
        items = sorted((it for s in states for it in s.get("items", ())),
                       key=lambda it: it[0]["time"])
        return {"items": items, "count": sum(int(s.get("count", 0)) for s in states),
                "dropped": sum(int(s.get("dropped", 0)) for s in states)}

    # -- checkpoints ----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The letters and counters, for the actor's checkpoint (letters are not changed
        once filed: a shallow copy of the list is a snapshot)."""
        return {"items": list(self._items), "count": self.count, "dropped": self.dropped}

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Go back to a checkpoint's letters; ``None`` (a checkpoint from before dead letters
        were checkpointed, or the start) leaves none."""
        state = state or {}
        self._items = deque(state.get("items", ()))
        self.bytes = sum(cost for _, cost in self._items)
        self.count = int(state.get("count", len(self._items)))
        self.dropped = int(state.get("dropped", 0))
        while self.bytes > self.max_bytes:  # a checkpoint of a larger store
            _, freed = self._items.popleft()
            self.bytes -= freed
            self.dropped += 1
