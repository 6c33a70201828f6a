"""Events from one partition of a Kafka topic (``confluent-kafka``, an optional extra).

The source is assigned its partition directly (no consumer-group rebalance, which is slow
and would move partitions under a running stage) and uses the group only to keep the
committed offset. ``_offset`` is the Kafka offset itself. On ``open()`` it starts at the
group's committed offset, else at ``start``; ``seek(offset)`` (a restart from a checkpoint)
goes back to that offset; ``commit(offset)`` commits it, which the runtime does only for
what a completed checkpoint covers. So events read after the last commit are read again
after a failure, never lost.

The consumer is assigned its partition once, at the first ``read()``, at the position
``open()`` and ``seek()`` settled on: assigning it again at another offset can let
messages the first assignment had already fetched through, which would hand out events
from before the checkpoint a second time. A ``seek()`` after reading has begun starts a new
consumer for the same reason, and a read never returns an offset below the position it
was sought to.

One partition per source, because a stage's position is one int64: read a topic with N
partitions with N stream stages (``partition=0 .. N-1``), each its own pipeline or
writing into a shared sink.
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from fusionkit._clock import monotonic, now
from fusionkit.batch import INGEST_TS
from fusionkit.sources.base import Source
from fusionkit.sources.decode import DECODES, decode_batch, empty_batch

__all__ = ["Kafka"]

LAG_EVERY = 1.0  # seconds between two looks at the partition's high watermark


def kafka_module():
    """``confluent_kafka``, imported on first use with a clear error if it is missing."""
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the Kafka source and sink need the 'confluent-kafka' package: "
                          "pip install 'fusionkit[kafka]'") from exc
    return confluent_kafka


class Kafka(Source):
    """One partition of a Kafka topic as a source.

    Parameters
    ----------
    bootstrap
        The brokers, ``"host:port[,host:port]"``.
    topic, partition
        What to read.
    group
        The consumer group that keeps the committed offset.
    decode
        ``"json"``: each message's value is a JSON object, one event. (``"fields"`` is not
        available: a Kafka message has no field map.)
    time_field
        The event's column holding its time; default: the message's timestamp.
    label, schema
        As for every source: the label column; a ``fusionkit.Schema`` for validation.
    start
        Where to begin when the group has no committed offset: ``"earliest"`` or
        ``"latest"``.
    poll_ms
        How long a read waits for messages when there are none.
    config
        Further librdkafka settings (``security.protocol``, ``sasl.*`` ...).

    Undecodable messages go to the stage's dead letters (``take_dead_letters``);
    ``health()`` reports ``retrying`` (the brokers cannot be reached) and
    ``source_backlog`` (messages of the partition not read yet).

    Examples
    --------
    >>> src = Kafka("127.0.0.1:9092", topic="clicks", partition=0)
    >>> src.describe()["topic"]
    'clicks'
    """

    rate = None

    def __init__(self, bootstrap: str = "127.0.0.1:9092", topic: str = "events",
                 partition: int = 0, group: str = "fusionkit", decode: str = "json",
                 time_field: str | None = None, label: str | None = None, schema: Any = None,
                 start: str = "earliest", poll_ms: int = 100,
                 config: dict[str, Any] | None = None):
        if not isinstance(bootstrap, str) or not bootstrap:
            raise ValueError(f"bootstrap must be 'host:port', got {bootstrap!r}")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if isinstance(partition, bool) or int(partition) < 0:
            raise ValueError(f"partition must be a partition number, got {partition!r}")
        if decode != "json":
            raise ValueError(f"the Kafka source decodes 'json' (one of {DECODES} for Redis), "
                             f"got {decode!r}")
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', got {start!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.partition = int(partition)
        self.group = group
        self.decode = decode
        self.time_field = time_field
        self.label = label
        self.schema = schema
        self.start = start
        self.poll_ms = int(poll_ms)
        self.config = dict(config or {})
        self._reset()

    def _reset(self) -> None:
        self._consumer: Any = None
        self._dead: list[tuple[Any, str, int]] = []
        self._down = threading.Event()  # set by librdkafka's error callback
        self._errors = 0
        self._last_error: str | None = None
        self._position = -1  # the next offset to read, once known
        self._assigned = False  # the partition is assigned at the first read
        self._start: int | None = None  # where that assignment starts
        self._floor = -1  # after a seek: drop anything below it until it is reached
        self._stale = 0  # messages so dropped
        self._backlog = float("nan")
        self._lag_at = float("-inf")

    def __getstate__(self) -> dict[str, Any]:  # picklable: the consumer stays behind
        keep = ("bootstrap", "topic", "partition", "group", "decode", "time_field", "label",
                "schema", "start", "poll_ms", "config")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- the source protocol -------------------------------------------------------------
    def open(self) -> None:
        """Connect, check the partition exists, and start at the group's committed offset
        (else ``start``). Unreachable brokers raise ``ConnectionError`` naming them."""
        ck = kafka_module()
        self._reset()
        consumer = self._connect()
        tp = ck.TopicPartition(self.topic, self.partition)
        try:
            committed = consumer.committed([tp], timeout=10)[0].offset
        except ck.KafkaException as exc:
            consumer.close()
            raise ConnectionError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        self._start = committed if committed >= 0 else ck.OFFSET_BEGINNING \
            if self.start == "earliest" else ck.OFFSET_END
        self._consumer = consumer

    def _connect(self) -> Any:
        """A consumer, once the brokers answered and the partition proved to exist."""
        ck = kafka_module()
        conf = {"bootstrap.servers": self.bootstrap, "group.id": self.group,
                "enable.auto.commit": False, "auto.offset.reset": self.start,
                "enable.partition.eof": False, "error_cb": self._on_error, **self.config}
        consumer = ck.Consumer(conf)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        except ck.KafkaException as exc:
            consumer.close()
            raise ConnectionError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        parts = meta.topics.get(self.topic)
        if parts is None or parts.error is not None or self.partition not in parts.partitions:
            consumer.close()
            have = sorted(parts.partitions) if parts is not None and parts.error is None else []
            raise ValueError(f"Kafka at {self.bootstrap} has no partition {self.partition} of "
                             f"topic {self.topic!r} (partitions: {have or 'none'})")
        self._down.clear()
        return consumer

    def seek(self, offset: int) -> None:
        """Resume at ``offset`` (replay from a checkpoint): the next read starts there."""
        if self._consumer is None:
            raise RuntimeError("Kafka source: call open() before seek()")
        if self._assigned:  # a consumer that has fetched: start a clean one
            old, self._consumer = self._consumer, None
            old.close()
            self._consumer = self._connect()
            self._assigned = False
        self._start = int(offset)
        self._position = self._floor = int(offset)

    def read(self, n: int) -> pd.DataFrame:
        if self._consumer is None:
            raise RuntimeError("Kafka source: call open() before read()")
        if not self._assigned:
            ck = kafka_module()
            self._consumer.assign([ck.TopicPartition(self.topic, self.partition, self._start)])
            self._assigned = True
        msgs = self._consumer.consume(int(n), timeout=self.poll_ms / 1000)
        records, offsets, times = [], [], []
        for m in msgs:
            err = m.error()
            if err is not None:
                self._note(str(err))
                continue
            if m.offset() < self._floor:  # fetched before the seek
                self._stale += 1
                continue
            self._floor = -1
            offsets.append(m.offset())
            records.append(m.value())
            ts_type, ts = m.timestamp()
            times.append(ts / 1000.0 if ts_type and ts > 0 else now())
        if records:
            self._down.clear()
            self._position = offsets[-1] + 1
        self._look_at_lag()
        if not records:
            return empty_batch()
        decoded = decode_batch(records, offsets, times, "json", self.time_field)
        self._dead.extend(decoded.dead)
        batch = decoded.batch
        batch[INGEST_TS] = now()
        return batch

    def commit(self, offset: int) -> None:
        """Commit ``offset`` for the group: everything before it is covered by a checkpoint."""
        ck = kafka_module()
        if offset <= 0 or self._consumer is None:
            return
        self._consumer.commit(offsets=[ck.TopicPartition(self.topic, self.partition,
                                                         int(offset))], asynchronous=False)

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None

    def describe(self) -> dict[str, Any]:
        return {"kind": "kafka", "bootstrap": self.bootstrap, "topic": self.topic,
                "partition": self.partition, "group": self.group, "rate": None}

    # -- what the stage collects after each read ------------------------------------------
    def take_dead_letters(self) -> list[tuple[Any, str, int]]:
        dead, self._dead = self._dead, []
        return dead

    def health(self) -> dict[str, float]:
        return {"retrying": int(self._down.is_set()), "source_errors": self._errors,
                "source_backlog": self._backlog}

    @property
    def last_error(self) -> str:
        return f"Kafka at {self.bootstrap}: {self._last_error or 'no error'}"

    # -- inside ----------------------------------------------------------------------------
    def _on_error(self, err: Any) -> None:
        """librdkafka reconnects by itself; note that the brokers went away meanwhile."""
        self._note(str(err))
        ck = kafka_module()
        if err.code() in (ck.KafkaError._ALL_BROKERS_DOWN, ck.KafkaError._TRANSPORT):
            self._down.set()

    def _note(self, message: str) -> None:
        self._errors += 1
        self._last_error = message

    def _look_at_lag(self) -> None:
        t = monotonic()
        if t - self._lag_at < LAG_EVERY or self._position < 0:
            return
        self._lag_at = t
        ck = kafka_module()
        try:
            _, high = self._consumer.get_watermark_offsets(
                ck.TopicPartition(self.topic, self.partition), timeout=1.0)
            self._backlog = float(max(0, high - self._position))
            self._down.clear()
        except ck.KafkaException:
            self._backlog = float("nan")
