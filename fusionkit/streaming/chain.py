"""A chain: a stream stage's operators run one after another inside one actor, all or
nothing per batch (a batch that fails part-way leaves every operator's state as before it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from fusionkit.streaming.base import Operator

__all__ = ["Chain", "undo_point"]


def undo_point(op: Operator) -> Callable[[], None] | None:
    """A function that puts ``op``'s state back as it is now, or None if it has none.

    A batch that fails part-way through a chain must leave every operator as before it, so
    the batch can be processed again (by a fixed chain, after a recovery) exactly once.
    fusionkit's stateful operators give a cheap one (``_undo_point``); another operator
    with state (its own ``get_state``) is snapshotted through ``get_state``/``set_state``.
    """
    own = getattr(op, "_undo_point", None)
    if own is not None:
        return own()
    if type(op).get_state is Operator.get_state:
        return None  # stateless
    state = op.get_state()
    return lambda: op.set_state(state)


class Chain(Operator):
    """Operators run one after another inside one actor.

    ``flush`` passes what each operator still holds through the operators after it; side
    outputs of all operators are merged by name; the state is a list, one item per operator.

    Examples
    --------
    >>> from fusionkit.streaming.operators import Filter, Map
    >>> chain = Chain([Filter("x > 0"), Map(lambda d: d.assign(y=d["x"] * 2))])
    >>> chain.process(pd.DataFrame({"x": [-1, 2]}))["y"].tolist()
    [4]
    """

    def __init__(self, operators: list[Operator]):
        self.operators = list(operators)

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Run ``batch`` through the operators; all or nothing: if one raises, every
        operator's state (open windows, keyed state, late events set aside) is put back
        as it was before the batch, and the error goes on up."""
        undo = [undo_point(op) for op in self.operators]
        try:
            for op in self.operators:
                batch = op.process(batch)
        except BaseException:
            for back in undo:
                if back is not None:
                    back()
            raise
        return batch

    def flush(self) -> pd.DataFrame | None:
        out = []
        for i, op in enumerate(self.operators):
            tail = op.flush()
            if tail is not None and len(tail):
                for nxt in self.operators[i + 1:]:
                    tail = nxt.process(tail)
                if len(tail):
                    out.append(tail)
        return pd.concat(out, ignore_index=True) if out else None

    def side_outputs(self) -> dict[str, pd.DataFrame]:
        merged: dict[str, list[pd.DataFrame]] = {}
        for op in self.operators:
            for name, frame in op.side_outputs().items():
                merged.setdefault(name, []).append(frame)
        return {name: pd.concat(frames) for name, frames in merged.items()}

    @property
    def held_keys(self) -> int:
        """Keys held by the operators that keep state per key (windows, keyed state)."""
        return sum(int(getattr(op, "held_keys", 0) or 0) for op in self.operators)

    def get_state(self) -> list[Any]:
        return [op.get_state() for op in self.operators]

    def set_state(self, state: list[Any] | None) -> None:
        if state is None:
            return
        if len(state) != len(self.operators):
            raise ValueError(f"the checkpoint holds the state of {len(state)} operators but the "
                             f"chain has {len(self.operators)}; it was taken of another chain")
        for op, s in zip(self.operators, state, strict=True):
            op.set_state(s)
