"""Where events come from: ``synthetic`` generators, ``replay`` of data you have."""

from fusionkit.sources.base import Source
from fusionkit.sources.drift import ConceptDrift, FeatureDrift
from fusionkit.sources.replay import Replay
from fusionkit.sources.synthetic import Synthetic

synthetic = Synthetic
replay = Replay

__all__ = ["Source", "Synthetic", "Replay", "synthetic", "replay", "FeatureDrift",
           "ConceptDrift"]
