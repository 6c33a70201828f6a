"""The operator protocol: what a stream stage does to each batch.

Operators are plain picklable objects chained inside one stream actor, so no Ray call
happens between them. ``process`` takes a batch and returns the batch to pass on (it may
be empty). Stateful operators (windows, keyed state) expose ``get_state``/``set_state`` so
checkpoints can capture them, and ``side_outputs`` for events they did not pass on (late
events), which the actor drains after each batch.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


class Operator:
    """Base class: the identity operator.

    Set ``sink = True`` on an operator that acts outside the pipeline (writes to a file, a
    store, a broker) and passes its batches on unchanged. Before a stage starts, fusionkit
    runs a sample of the source through the chain to catch a broken user function; that
    sample is read again once the stage runs, so the check leaves sinks out, and stops at
    any operator of a class fusionkit does not know (it may write somewhere too).
    """

    sink = False

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch

    def flush(self) -> pd.DataFrame | None:
        """End of stream: emit what is still held (open windows). ``None`` if nothing."""
        return None

    def side_outputs(self) -> dict[str, pd.DataFrame]:
        """Drain events routed aside since the last call, e.g. ``{"late": df}``."""
        return {}

    def get_state(self) -> Any:
        return None

    def set_state(self, state: Any) -> None:
        pass
