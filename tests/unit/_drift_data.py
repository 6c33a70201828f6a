"""Synthetic click batches and a fixed rule model, shared by the drift watch's unit tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusionkit.sources.synthetic import Synthetic
from fusionkit.training.protocol import Prediction


def batches(n: int, drift=(), seed: int = 0, size: int = 500):
    src = Synthetic(rate=None, seed=seed, max_events=n, start_time=0.0, drift=drift)
    src.open()
    while (b := src.read(size)) is not None:
        yield b


def rule_prediction(batch: pd.DataFrame) -> Prediction:
    """A fixed model of the synthetic clicks: click when dwell is long and price low."""
    score = np.log(batch["dwell"].to_numpy()) - 0.5 * np.log(batch["price"].to_numpy())
    proba = 1.0 / (1.0 + np.exp(-(score - 1.5) * 2.0))
    return Prediction((proba > 0.5).astype("int64"), proba)
