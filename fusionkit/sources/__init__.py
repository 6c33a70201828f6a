"""Where events come from: ``synthetic`` generators (``synthetic_feedback``: impressions
and their delayed outcomes), ``replay`` of data you have, ``redis`` streams and ``kafka``
partitions."""

from fusionkit.sources.base import Source
from fusionkit.sources.drift import ConceptDrift, FeatureDrift
from fusionkit.sources.feedback import synthetic_feedback
from fusionkit.sources.kafka import Kafka
from fusionkit.sources.redis import Redis
from fusionkit.sources.replay import Replay
from fusionkit.sources.synthetic import Synthetic

synthetic = Synthetic
replay = Replay
redis = Redis
kafka = Kafka

__all__ = ["Source", "Synthetic", "Replay", "Redis", "Kafka", "synthetic", "replay", "redis",
           "kafka", "FeatureDrift", "ConceptDrift", "synthetic_feedback"]
