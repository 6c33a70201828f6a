"""Write a stage's output to a Kafka topic (``confluent-kafka``, an optional extra).

Like the Redis sink, an operator placed last in a stream stage: each batch is produced as
JSON messages (one per row, keyed by ``key`` if given) and flushed before the batch moves
on, so a batch the stage passed on has been delivered. At least once: a recovery replays
from the last checkpoint and produces those rows again; each carries its ``_offset``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusionkit.batch import INGEST_TS
from fusionkit.sources._kafka import kafka_module
from fusionkit.streaming.base import Operator

__all__ = ["Kafka"]


class Kafka(Operator):
    """A Kafka topic as a sink.

    Parameters
    ----------
    bootstrap
        The brokers, ``"host:port[,host:port]"``.
    topic
        Where to write.
    key
        A column whose value keys each message (Kafka partitions by key); default none.
    columns
        The columns to write; default every column but ``_ingest_ts``.
    timeout
        Seconds a batch may take to be delivered before the write raises.
    config
        Further librdkafka producer settings.

    Examples
    --------
    >>> Kafka("127.0.0.1:9092", topic="predictions").describe()["topic"]
    'predictions'
    """

    #: writes outside the pipeline: the stage's definition-time probe leaves it out
    sink = True

    def __init__(self, bootstrap: str = "127.0.0.1:9092", topic: str = "predictions",
                 key: str | None = None, columns: list[str] | None = None,
                 timeout: float = 60.0, config: dict[str, Any] | None = None):
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key
        self.columns = list(columns) if columns is not None else None
        self.timeout = timeout
        self.config = dict(config or {})
        self.written = 0
        self._producer: Any = None

    def __getstate__(self) -> dict[str, Any]:  # picklable: the producer stays behind
        state = dict(self.__dict__)
        state["_producer"] = None
        return state

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.write(batch)
        return batch

    def write(self, batch: pd.DataFrame) -> int:
        """Produce the batch's rows and wait until they are delivered; return the count."""
        if len(batch) == 0:
            return 0
        ck = kafka_module()
        if self._producer is None:
            self._producer = ck.Producer({"bootstrap.servers": self.bootstrap,
                                          "linger.ms": 5, **self.config})
        cols = self.columns or [c for c in batch.columns if c != INGEST_TS]
        lines = batch[cols].to_json(orient="records", lines=True).splitlines()
        keys = (batch[self.key].astype(str).tolist() if self.key is not None
                else [None] * len(lines))
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for line, key in zip(lines, keys, strict=True):
            while True:
                try:
                    self._producer.produce(self.topic, line.encode(), key=key,
                                           on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let it drain
                    self._producer.poll(0.1)
        left = self._producer.flush(self.timeout)
        if left or failed:
            why = failed[0] if failed else f"{left} messages not delivered in {self.timeout:g}s"
            raise ConnectionError(f"cannot write to Kafka at {self.bootstrap}: {why}")
        self.written += len(lines)
        return len(lines)

    def describe(self) -> dict[str, Any]:
        return {"kind": "kafka sink", "bootstrap": self.bootstrap, "topic": self.topic}
