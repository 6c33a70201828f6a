"""Which columns of a batch an adapted model learns from: ``features`` when given, else
every column but the reserved ones, the label and those named like ids
(``fusionkit.batch.model_features`` says why). Shared by the River and partial-fit adapters.
"""

from __future__ import annotations

import pandas as pd

from fusionkit.batch import model_features
from fusionkit.errors import SchemaError

__all__ = ["FeatureColumns"]


class FeatureColumns:
    """Feature selection of an adapter: ``features``, else the batch's model features."""

    features: list[str] | None
    label: str | None
    _label: str | None

    def _remember_label(self, y: pd.Series) -> None:
        if self.label is None and self._label is None and y.name is not None:
            self._label = str(y.name)

    def _columns(self, X: pd.DataFrame) -> list[str]:
        if self.features is not None:
            missing = [c for c in self.features if c not in X.columns]
            if missing:
                raise SchemaError(f"the batch has no feature column(s) {missing}")
            return list(self.features)
        label = self.label if self.label is not None else self._label
        return model_features(X, label)
