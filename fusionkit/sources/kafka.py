"""Events from Kafka partitions (``confluent-kafka``, an optional extra).

The source is assigned its partitions directly (no consumer-group rebalance, which is slow
and would move partitions under a running stage) and uses the group only to keep the
committed offsets. On ``open()`` each partition starts at the group's committed offset, else
at ``start``; ``seek(position)`` (a restart from a checkpoint) goes back to a position;
``commit(position)`` commits it, which the runtime does only for what a completed checkpoint
covers. So events read after the last commit are read again after a failure, never lost.

One partition (``partition=3``): the position is that partition's Kafka offset, an int.
Several (``partitions=[0, 1]`` or ``"all"``): the position is a ``{partition: offset}`` map,
and a stage with ``parallelism=N`` (and no ``key_by``) spreads the partitions over its N
actors, each reading every N-th of them with its own consumer and position (``share``).

The consumer is assigned its partitions once, at the first ``read()``, at the positions
``open()`` and ``seek()`` settled on: assigning them again at other offsets can let
messages the first assignment had already fetched through, which would hand out events
from before the checkpoint a second time. A ``seek()`` after reading has begun starts a new
consumer for the same reason, and a read never returns an offset below the position a
partition was sought to.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fusionkit._clock import monotonic, now
from fusionkit.batch import INGEST_TS
from fusionkit.sources._kafka import choose_partitions, kafka_module, nth, parse_partitions
from fusionkit.sources.base import Backoff, Source
from fusionkit.sources.decode import DECODES, MAX_BYTES, decode_batch, empty_batch, limits

__all__ = ["Kafka"]

LAG_EVERY = 1.0  # seconds between two looks at the partition's high watermark


class Kafka(Source):
    """Kafka partitions as a source.

    Parameters
    ----------
    bootstrap
        The brokers, ``"host:port[,host:port]"``.
    topic, partition
        What to read: one partition of the topic.
    partitions
        Several partitions instead of one: a list of numbers, ``"0,1,2"``, or ``"all"``
        (every partition the topic has when the stage starts). A stream stage with
        ``parallelism=N`` and no ``key_by`` spreads them over its N actors.
    group
        The consumer group that keeps the committed offsets. Default: the name of the stage
        reading the source (``"fusionkit"`` when read outside a stage), so two stages
        reading one topic keep their offsets apart.
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
    retry_for
        Seconds the brokers may stay unreachable mid-run (librdkafka reconnecting meanwhile)
        before a read raises and the stage fails saying so (``None``: forever). At
        ``open()`` unreachable brokers are an error at once.
    max_bytes
        Messages larger than this (default 1 MiB) go to the dead letters unread, with a
        preview (``None``: no cap).
    max_future
        How far an event time (``time_field``, else the message's timestamp, which the
        producer may set) may lie ahead of the wall clock: default ``"1h"``, seconds or a
        duration, ``None`` for no bound. Events further ahead, and times that are not
        finite, go to the dead letters instead of pushing a window's watermark past every
        later event.

    Undecodable messages (whatever the error reading them), oversized ones and events with
    an unreadable or out-of-bounds time go to the stage's dead letters (``take_dead_letters``);
    ``health()`` reports ``retrying`` (the brokers cannot be reached) and
    ``source_backlog`` (messages of its partitions not read yet).

    Examples
    --------
    >>> src = Kafka("127.0.0.1:9092", topic="clicks", partition=0)
    >>> src.describe()["topic"]
    'clicks'
    >>> every = Kafka("127.0.0.1:9092", topic="clicks", partitions="all")
    >>> every.splittable, every.share(1, 2).describe()["partitions"]
    (True, 'all, every 2nd from the 2nd')
    """

    rate = None

    def __init__(self, bootstrap: str = "127.0.0.1:9092", topic: str = "events",
                 partition: int = 0, group: str | None = None, decode: str = "json",
                 time_field: str | None = None, label: str | None = None, schema: Any = None,
                 start: str = "earliest", poll_ms: int = 100,
                 config: dict[str, Any] | None = None,
                 partitions: Sequence[int] | str | None = None,
                 retry_for: float | None = 300.0, max_bytes: int | None = MAX_BYTES,
                 max_future: float | str | None = "1h"):  # fmt: skip
        if not isinstance(bootstrap, str) or not bootstrap:
            raise ValueError(f"bootstrap must be 'host:port', got {bootstrap!r}")
        if not isinstance(topic, str) or not topic:
            raise ValueError(f"topic must be a non-empty string, got {topic!r}")
        if isinstance(partition, bool) or int(partition) < 0:
            raise ValueError(f"partition must be a partition number, got {partition!r}")
        if decode != "json":
            raise ValueError(f"the Kafka source decodes 'json' (one of {DECODES} for Redis), "
                             f"got {decode!r}")
        if group is not None and (not isinstance(group, str) or not group):
            raise ValueError(f"group must be a non-empty string or None (the stage's name), "
                             f"got {group!r}")
        if start not in ("earliest", "latest"):
            raise ValueError(f"start must be 'earliest' or 'latest', got {start!r}")
        if retry_for is not None and retry_for < 0:
            raise ValueError(f"retry_for must be a number of seconds or None, got {retry_for!r}")
        self.bootstrap = bootstrap
        self.topic = topic
        self.partition = int(partition)
        self.partitions = parse_partitions(partitions)
        self.group = group
        self.decode = decode
        self.time_field = time_field
        self.label = label
        self.schema = schema
        self.start = start
        self.poll_ms = int(poll_ms)
        self.config = dict(config or {})
        self.retry_for = retry_for
        self.max_bytes, self.max_future = limits(max_bytes, max_future)
        self._share = (0, 1)  # this source reads every count-th partition from index
        self._reset()

    @property
    def consumer_group(self) -> str:
        """The group keeping the offsets: ``group``, else the reading stage's name."""
        return self.group or self.stage or "fusionkit"

    @property
    def splittable(self) -> bool:  # type: ignore[override]
        return self.partitions is not None

    def share(self, index: int, count: int) -> Kafka:
        """The partitions actor ``index`` of ``count`` reads: every ``count``-th one of the
        source's, from the ``index``-th (a topic with fewer partitions than actors is an
        error when the actor opens it)."""
        if self.partitions is None:
            raise ValueError("a source of one Kafka partition cannot be split over actors; "
                             "give partitions=[...] or partitions='all'")
        if not 0 <= index < count:
            raise ValueError(f"share {index} of {count} does not exist")
        part = pickle.loads(pickle.dumps(self))
        part._share = (int(index), int(count))
        return part

    def _reset(self) -> None:
        self._consumer: Any = None
        self._dead: list[tuple[Any, str, int]] = []
        # the brokers unreachable (librdkafka's error callback) since when; given up after
        # retry_for (librdkafka reconnects by itself: its delays are not used)
        self._outage = Backoff(give_up=self.retry_for)
        self._errors = 0
        self._last_error: str | None = None
        self._mine: list[int] = []  # the partitions this source reads, once connected
        self._positions: dict[int, int] = {}  # the next offset to read, where known
        self._assigned = False  # the partitions are assigned at the first read
        self._starts: dict[int, int] = {}  # where that assignment starts
        self._floors: dict[int, int] = {}  # after a seek: drop anything below, until reached
        self._stale = 0  # messages so dropped
        self._backlog = float("nan")
        self._lag_at = float("-inf")

    def __getstate__(self) -> dict[str, Any]:  # picklable: the consumer stays behind
        keep = ("bootstrap", "topic", "partition", "partitions", "group", "decode",
                "time_field", "label", "schema", "start", "poll_ms", "config", "retry_for",
                "max_bytes", "max_future", "stage", "_share")
        return {k: self.__dict__[k] for k in keep if k in self.__dict__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("partitions", None)
        self.__dict__.setdefault("_share", (0, 1))
        self.__dict__.setdefault("retry_for", 300.0)
        self.__dict__.setdefault("max_bytes", MAX_BYTES)
        self.__dict__.setdefault("max_future", 3600.0)
        self._reset()

    # -- the source protocol -------------------------------------------------------------
    def open(self) -> None:
        """Connect, check the partitions exist, and start each at the group's committed
        offset (else ``start``). Unreachable brokers raise ``ConnectionError`` naming them."""
        ck = kafka_module()
        self._reset()
        consumer = self._connect()
        tps = [ck.TopicPartition(self.topic, p) for p in self._mine]
        try:
            committed = consumer.committed(tps, timeout=10)
        except ck.KafkaException as exc:
            consumer.close()
            raise ConnectionError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        default = ck.OFFSET_BEGINNING if self.start == "earliest" else ck.OFFSET_END
        self._starts = {tp.partition: tp.offset if tp.offset >= 0 else default
                        for tp in committed}  # fmt: skip
        self._consumer = consumer

    def _connect(self) -> Any:
        """A consumer, once the brokers answered and the partitions proved to exist."""
        ck = kafka_module()
        conf = {"bootstrap.servers": self.bootstrap, "group.id": self.consumer_group,
                "enable.auto.commit": False, "auto.offset.reset": self.start,
                "enable.partition.eof": False, "error_cb": self._on_error, **self.config}
        consumer = ck.Consumer(conf)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        except ck.KafkaException as exc:
            consumer.close()
            raise ConnectionError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        parts = meta.topics.get(self.topic)
        have = sorted(parts.partitions) if parts is not None and parts.error is None else []
        try:
            self._mine = self._choose(have)
        except ValueError:
            consumer.close()
            raise
        self._outage.ok()
        return consumer

    def _choose(self, have: list[int]) -> list[int]:
        """This source's partitions out of the topic's ``have``."""
        wanted = ([self.partition] if self.partitions is None else
                  have if self.partitions == "all" else list(self.partitions))
        return choose_partitions(wanted, have, self._share, self.topic,
                                 f"Kafka at {self.bootstrap}")

    def seek(self, offset: int | dict[int, int]) -> None:
        """Resume at a position (replay from a checkpoint): the next read starts there. A
        ``{partition: offset}`` map may hold other actors' partitions (a stage scaled to
        another parallelism): each source takes its own; the others start as ``open()`` did."""
        if self._consumer is None:
            raise RuntimeError("Kafka source: call open() before seek()")
        if self._assigned:  # a consumer that has fetched: start a clean one
            old, self._consumer = self._consumer, None
            old.close()
            self._consumer = self._connect()
            self._assigned = False
        for p, at in self._own(offset).items():
            self._starts[p] = self._positions[p] = self._floors[p] = at

    def _own(self, position: Any) -> dict[int, int]:
        """This source's partitions of ``position`` (an offset when it reads one)."""
        if isinstance(position, dict):
            return {int(p): int(at) for p, at in position.items() if int(p) in self._mine}
        if self.partitions is not None:
            raise TypeError(f"a source of several Kafka partitions takes a {{partition: "
                            f"offset}} position, got {position!r}")
        return {self.partition: int(position)}

    def position(self) -> int | dict[int, int] | None:
        """The next offset to read (one partition) or ``{partition: next offset}``."""
        if self.partitions is None:
            return self._positions.get(self.partition)
        return dict(self._positions) or None

    def read(self, n: int) -> pd.DataFrame:
        if self._consumer is None:
            raise RuntimeError("Kafka source: call open() before read()")
        if not self._assigned:
            ck = kafka_module()
            self._consumer.assign([ck.TopicPartition(self.topic, p, self._starts[p])
                                   for p in self._mine])  # fmt: skip
            self._assigned = True
        msgs = self._consumer.consume(int(n), timeout=self.poll_ms / 1000)
        records, offsets, times = [], [], []
        for m in msgs:
            err = m.error()
            if err is not None:
                self._note(str(err))
                continue
            p, at = m.partition(), m.offset()
            if at < self._floors.get(p, -1):  # fetched before the seek
                self._stale += 1
                continue
            self._floors.pop(p, None)
            self._positions[p] = at + 1
            offsets.append(at)
            records.append(m.value())
            ts_type, ts = m.timestamp()
            times.append(ts / 1000.0 if ts_type and ts > 0 else now())
        if records:
            self._outage.ok()
        self._look_at_lag()
        self._give_up_after_retry_for()
        if not records:
            return empty_batch()
        decoded = decode_batch(records, offsets, times, "json", self.time_field,
                               max_bytes=self.max_bytes, max_future=self.max_future)
        self._dead.extend(decoded.dead)
        batch = decoded.batch
        batch[INGEST_TS] = now()
        return batch

    def commit(self, offset: int | dict[int, int]) -> None:
        """Commit a position for the group: everything before it is covered by a checkpoint."""
        ck = kafka_module()
        if self._consumer is None or not offset:
            return
        tps = [ck.TopicPartition(self.topic, p, at) for p, at in self._own(offset).items()
               if at > 0]
        if tps:
            self._consumer.commit(offsets=tps, asynchronous=False)

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None

    def describe(self) -> dict[str, Any]:
        out = {"kind": "kafka", "bootstrap": self.bootstrap, "topic": self.topic,
               "group": self.group or self.stage, "rate": None}
        if self.partitions is None:
            return {**out, "partition": self.partition}
        index, count = self._share
        spec = "all" if self.partitions == "all" else ",".join(map(str, self.partitions))
        if count > 1:
            spec += f", every {nth(count)} from the {nth(index + 1)}"
        return {**out, "partitions": self._mine or spec}

    # -- what the stage collects after each read ------------------------------------------
    def take_dead_letters(self) -> list[tuple[Any, str, int]]:
        dead, self._dead = self._dead, []
        return dead

    def health(self) -> dict[str, float]:
        return {"retrying": int(self._outage.retrying), "source_errors": self._errors,
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
            self._outage.failed(ConnectionError(str(err)))

    def _give_up_after_retry_for(self) -> None:
        if self._outage.expired():
            down = monotonic() - self._outage.since
            raise ConnectionError(f"Kafka at {self.bootstrap} unreachable for {down:.0f} s "
                                  f"(retry_for={self.retry_for:g}); last error: "
                                  f"{self._last_error}")

    def _note(self, message: str) -> None:
        self._errors += 1
        self._last_error = message

    def _look_at_lag(self) -> None:
        t = monotonic()
        if t - self._lag_at < LAG_EVERY or not self._positions:
            return
        self._lag_at = t
        ck = kafka_module()
        try:
            backlog = 0
            for p, at in list(self._positions.items()):
                _, high = self._consumer.get_watermark_offsets(
                    ck.TopicPartition(self.topic, p), timeout=1.0)
                backlog += max(0, high - at)
            self._backlog = float(backlog)
            self._outage.ok()
        except ck.KafkaException:
            self._backlog = float("nan")
