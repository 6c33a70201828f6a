"""Drift monitors: feature and prediction drift by windows, concept drift on the error stream.

A train stage keeps one :class:`DriftMonitor` and hands it every micro-batch after the
prequential step: the batch's features, the model (to score samples of inputs with) and the
per-event error (0/1 or absolute). It returns the rows to plot and the
:class:`~fusionkit.drift_detection.records.Alarm` records raised.

- Feature drift (:class:`FeatureDriftMonitor`): each tumbling window of ``window`` events
  is compared to a reference window, per column: PSI plus KS for numbers, PSI plus
  chi-squared for categories. A window alarms only when the shift is both large (PSI) and
  significant (test), see the class for the calibration.
- Prediction drift (:class:`~fusionkit.drift_detection.prediction.PredictionDriftMonitor`):
  the same windows and test on the model's answers, with the model held fixed: samples of
  the reference's and of the window's inputs are both scored by the model as it is at the
  test, so a model that is learning does not look like drift.
- Concept drift (:class:`ConceptDriftMonitor`): a River detector on the error stream, with
  a direction check, plus a windowed test on the error rate. An alarm means "the model got
  worse", never "the model got better".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fusionkit.batch import EVENT_TIME, OFFSET
from fusionkit.drift_detection.concept import ConceptDriftMonitor
from fusionkit.drift_detection.feature import FeatureDriftMonitor
from fusionkit.drift_detection.prediction import PredictionDriftMonitor, Scorer
from fusionkit.drift_detection.records import DriftResult
from fusionkit.drift_detection.reference import WindowSettings, settings_in_state

__all__ = ["DriftMonitor"]


def _array(batch: pd.DataFrame, name: str, dtype: str | None = None) -> np.ndarray:
    """``batch[name].to_numpy(dtype)``, without building the Series when the column is a
    plain NumPy array (the Series costs more than the rest of a small batch's step)."""
    loc = batch.columns.get_loc(name)
    get = getattr(batch, "_get_column_array", None)
    if get is not None and isinstance(loc, int):
        arr = get(loc)
        if isinstance(arr, np.ndarray):
            return arr if dtype is None else arr.astype(dtype, copy=False)
    return batch[name].to_numpy(dtype=dtype)



class DriftMonitor:
    """Everything drift for one train stage: features, predictions and the error stream.

    The train stage calls ``update`` with each micro-batch after predicting and learning
    it; the result's rows go to the monitor's drift series, its alarms to the alarm log.
    Parameters are those of :class:`FeatureDriftMonitor`; ``concept`` is the detector of
    :class:`ConceptDriftMonitor` (``None`` turns concept drift off) and ``concept_params``
    its other parameters; ``prediction_sample`` is the sample of
    :class:`~fusionkit.drift_detection.prediction.PredictionDriftMonitor`. The window
    settings are checked once, as one
    :class:`~fusionkit.drift_detection.reference.WindowSettings` that both monitors share.

    Prediction drift comes in two forms. Given ``score`` (the model as it is now, scoring a
    DataFrame of inputs), ``update`` compares the reference's inputs and each window's
    inputs scored by that one model (:class:`PredictionDriftMonitor`): what a learning
    model needs, whose own predictions change as it learns. Given only ``predictions``, it
    compares them with the first ones like a feature: right for a model that does not
    change (a fixed rule, a frozen version), wrong for one that learns.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> mon = DriftMonitor(features=["amount"], reference=1000, window=500, stage="ctr")
    >>> batch = pd.DataFrame({"amount": rng.normal(size=2000), "_offset": np.arange(2000)})
    >>> res = mon.update(batch, predictions=rng.random(2000), errors=rng.random(2000) < 0.1)
    >>> sorted({(r["kind"], r["feature"]) for r in res.rows})
    [('concept', 'error'), ('feature', 'amount'), ('prediction', 'prediction')]
    >>> res.alarms
    []
    """

    def __init__(
        self,
        features: list[str] | None = None,
        reference: str | int | pd.DataFrame = "first 10000 events",
        window: int = 5000,
        psi_alarm: float = 0.2,
        ks_alpha: float = 0.01,
        concept: str | Any | None = "adwin",
        sliding_reference: bool = False,
        categorical: list[str] | None = None,
        stage: str = "",
        concept_params: dict[str, Any] | None = None,
        prediction_sample: int = 500,
    ):
        self.settings = WindowSettings(reference, window, psi_alarm, ks_alpha, sliding_reference,
                                       prediction_sample)  # fmt: skip
        self.features = features
        self.concept = concept
        self.categorical = categorical
        self.stage = stage
        self.concept_params = concept_params
        self.prediction_monitor = PredictionDriftMonitor(stage=stage, settings=self.settings)
        self.feature_monitor = FeatureDriftMonitor(features, categorical=categorical, stage=stage,
                                                   settings=self.settings)  # fmt: skip
        self.concept_monitor = (
            None
            if concept is None
            else ConceptDriftMonitor(concept, stage=stage, **(concept_params or {}))
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "settings" not in state:  # checkpointed when each monitor kept its own settings
            state = settings_in_state(state)
            for part in ("feature_monitor", "prediction_monitor"):
                if part in state:  # one record for all three, as __init__ makes it
                    state[part].settings = state["settings"]
        if "prediction_monitor" not in state:  # checkpointed before it existed
            state["prediction_monitor"] = PredictionDriftMonitor(stage=state["stage"],
                                                                 settings=state["settings"])
        self.__dict__.update(state)

    def update(
        self, batch: pd.DataFrame, predictions: Any = None, errors: Any = None,
        score: Scorer | None = None,
    ) -> DriftResult:
        """Add one batch, the model's predictions for it and its per-event errors; with
        ``score``, prediction drift scores samples of inputs with it (``predictions`` are
        then not watched).

        A NaN error marks an event the model could not predict yet (as
        ``Prequential.error_stream`` gives it): its features are watched, its error is not.
        """
        result = self.feature_monitor.update(batch, None if score is not None else predictions)
        if score is not None:
            scored = self.prediction_monitor.update(batch, score)
            result = DriftResult(result.rows + scored.rows, result.alarms + scored.alarms)
        if errors is None or self.concept_monitor is None:
            return result
        whole = np.asarray(errors).dtype.kind in "biu"  # booleans or integers: none missing
        errors = np.asarray(errors, dtype="float64").ravel()
        if errors.size != len(batch):
            raise ValueError("errors must hold one value per event of the batch")
        columns = batch.columns
        offsets = _array(batch, OFFSET) if OFFSET in columns else None
        times = _array(batch, EVENT_TIME, "float64") if EVENT_TIME in columns else None
        missing = None if whole else np.isnan(errors)
        if missing is not None and missing.any():
            known = ~missing
            errors = errors[known]
            offsets = None if offsets is None else offsets[known]
            times = None if times is None else times[known]
        concept = self.concept_monitor.update(errors, offsets, times)
        return DriftResult(result.rows + concept.rows, result.alarms + concept.alarms)
