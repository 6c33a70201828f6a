"""Where events come from: ``synthetic`` generators, ``replay`` of data you have,
``redis`` streams."""

from fusionkit.sources.base import Source
from fusionkit.sources.drift import ConceptDrift, FeatureDrift
from fusionkit.sources.redis import Redis
from fusionkit.sources.replay import Replay
from fusionkit.sources.synthetic import Synthetic

synthetic = Synthetic
replay = Replay
redis = Redis

__all__ = ["Source", "Synthetic", "Replay", "Redis", "synthetic", "replay", "redis",
           "FeatureDrift", "ConceptDrift"]
