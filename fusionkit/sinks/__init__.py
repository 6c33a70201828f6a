"""Where a stage's output goes besides the next stage: ``redis`` streams, ``kafka`` topics.

A sink is an operator placed last in a stream stage's chain: it writes every batch that
reaches it and passes the batch on unchanged, so the stage can still feed a train stage.

On a connected cluster (a usage sketch, not a doctest: it needs one and a Redis server)::

    import fusionkit as fk
    fk.stream("scored", source=..., fn=score,
              operators=[fk.sinks.redis("redis://127.0.0.1:6379/0", stream="predictions")])
"""

from fusionkit.sinks.kafka import Kafka
from fusionkit.sinks.redis import Redis

redis = Redis
kafka = Kafka

__all__ = ["Kafka", "Redis", "kafka", "redis"]
