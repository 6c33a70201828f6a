"""Append-only JSON-lines logs: many writers (serve replicas) append, one source reads them.

A log is a folder. Each writer appends to a folder of its own, ``w-<name>/``, in segments
``000000000000.jsonl``, ``000000000001.jsonl``, ... of at most ``segment_bytes`` each: one
JSON object per line, never pickle, so any tool can read what was served. A writer appends
a request's rows with one ``write`` of whole lines and returns: no fsync, so a writer's
process that dies (SIGKILL) loses nothing it wrote (the kernel holds it), only a crash of
the machine can. The measured cost is in ``fusionkit.serving.served_log``.

``LogFiles`` reads every writer's folder. Its position is ``{writer: segment * SPAN +
byte}``, the start of the next line to read in each, so a checkpoint holds where every
writer was read up to and a replay after a restart reads exactly the lines after it (the
stage's ``later`` merges such maps writer by writer). A segment is finished once the next
one exists (the writer opens it only after its last write to the one before), and the
reader looks for the next segment before it reads to the end of the current one, so it
never leaves a segment that could still grow. A line without its newline yet is left for
the next read. ``commit`` deletes the segments below a committed position, so a log stays
as large as what no checkpoint covers yet; a writer's folder goes too once its writer has
died (its lock, held by the writer's process, is free) and all it wrote is committed.

The folder must be one file system for every writer and the reader: one machine, or a
shared mount on a cluster.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit._files import make_private_dir
from fusionkit.batch import EVENT_TIME, INGEST_TS, OFFSET
from fusionkit.sources.base import Source

__all__ = ["LogWriter", "LogFiles", "SPAN", "SEGMENT_BYTES"]

SPAN = 2**40  # position = segment * SPAN + byte: a segment is far smaller than a TiB
SEGMENT_BYTES = 8 * 2**20
CHUNK = 4 * 2**20  # most bytes one read takes from one segment
SUFFIX = ".jsonl"
LOCK = "lock"
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def segment_name(number: int) -> str:
    return f"{number:012d}{SUFFIX}"


def _plain(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: numpy scalars as numbers, the rest as text."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def encode(records: list[dict[str, Any]]) -> bytes:
    """Records as JSON lines (NaN and infinities as ``null``: strict JSON).

    >>> encode([{"a": 1, "b": float("nan")}, {"a": 2}])
    b'{"a":1,"b":null}\\n{"a":2}\\n'
    """
    lines = []
    for r in records:
        try:
            lines.append(_ENCODE(r))
        except ValueError:  # NaN or infinity somewhere: written as null
            lines.append(_ENCODE(_finite(r)))
    lines.append("")
    return "\n".join(lines).encode()


# one encoder: ``json.dumps`` with options builds a new one per call, a third of its cost
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_plain).encode


class LogWriter:
    """One writer of a log folder: appends records as JSON lines to its own segments.

    Thread-safe: a replica answers requests on several threads. ``append`` returns once the
    lines are written to the file (the operating system's), not synced to the disk.

    Examples
    --------
    >>> import tempfile
    >>> w = LogWriter(tempfile.mkdtemp(), name="r1", segment_bytes=64)
    >>> w.append([{"x": i, "_event_time": 1.0} for i in range(3)])  # one request: one segment
    >>> w.append([{"x": 3, "_event_time": 1.0}])  # past 64 bytes: the next segment
    >>> w.segment, w.name
    (1, 'r1')
    >>> w.close()
    """

    def __init__(self, folder: str | os.PathLike, name: str | None = None,
                 segment_bytes: int = SEGMENT_BYTES):
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.folder = Path(folder)
        self.name = _NAME.sub("_", name or "w")
        self.segment_bytes = int(segment_bytes)
        self._lock = threading.Lock()
        make_private_dir(self.folder)
        # made under a temporary name, locked, then renamed: a reader never sees a writer's
        # folder whose lock is not held yet (it would take the writer for dead)
        tmp = self.folder / f"tmp-{self.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(mode=0o700)
        self._lock_fd = os.open(tmp / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = self.folder / f"w-{self.name}"
        if self.path.exists():
            self.path = self.folder / f"w-{self.name}-{uuid.uuid4().hex[:8]}"
            self.name = self.path.name[2:]
        os.rename(tmp, self.path)
        self.segment = -1
        self.size = 0
        self._fd: int | None = None
        self._open(0)

    def _open(self, number: int) -> None:
        fd = os.open(self.path / segment_name(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o600)
        old, self._fd = self._fd, fd
        self.segment, self.size = number, 0
        if old is not None:
            os.close(old)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` (JSON-able dicts) as lines, with one write, in one segment."""
        if not records:
            return
        data = encode(records)
        with self._lock:
            if self._fd is None:
                raise ValueError("LogWriter: append after close")
            if self.size and self.size + len(data) > self.segment_bytes:
                self._open(self.segment + 1)  # the one before is finished: it never grows
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            self.size += len(data)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None


def writer_alive(path: Path) -> bool:
    """Whether a writer holds the lock of its folder ``path`` (its process is alive)."""
    try:
        fd = os.open(path / LOCK, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing the descriptor drops a lock taken here
    return False


def segments(path: Path) -> list[int]:
    """The segment numbers in a writer's folder, ascending."""
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-len(SUFFIX)]) for n in names
                  if n.endswith(SUFFIX) and n[:-len(SUFFIX)].isdigit())


class LogFiles(Source):
    """Every writer's lines of a log folder as events, from a ``{writer: position}`` map.

    ``schema``: the ``Schema`` the stage validates the events with; by default one is
    inferred from the first batch (a writer that checked its rows already, as a serve
    replica does, passes one that checks only what the readers rely on).

    Each line is an event with its columns; ``_event_time`` comes from the line (its
    ``_event_time`` field, seconds), ``_offset`` is the line's position in its writer's
    log. A line that is not a JSON object, or has no finite ``_event_time``, goes to the
    dead letters with the reason. ``read(n)`` takes lines from the writers in turn and
    returns them ordered by event time.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> w = LogWriter(folder, name="a")
    >>> w.append([{"request_id": "r1", "x": 1.5, "_event_time": 10.0}])
    >>> src = LogFiles(folder)
    >>> src.open()
    >>> src.read(10)[["request_id", "x", "_event_time"]].values.tolist()
    [['r1', 1.5, 10.0]]
    >>> src.position()
    {'a': 47}
    """

    splittable = False
    probe_wait = 0.0  # its events come from requests: a definition has none to wait for

    def __init__(self, folder: str | os.PathLike, label: str | None = None,
                 schema: Any = None):
        self.folder = str(folder)
        self.label = label
        self.schema = schema  # what the stage validates its events with (None: inferred)
        self._reset()

    def _reset(self) -> None:
        self._at: dict[str, int] = {}
        self._turn = 0
        self._dead: list[tuple[Any, str, int]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"folder": self.folder, "label": self.label, "schema": self.schema,
                "stage": self.stage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- the source protocol ---------------------------------------------------------------
    def open(self) -> None:
        make_private_dir(Path(self.folder))

    def seek(self, offset: Any) -> None:
        """Resume at a ``{writer: position}`` map (0: from the start of every writer)."""
        if isinstance(offset, dict):
            self._at = {str(w): int(p) for w, p in offset.items()}
        elif offset in (0, None):
            self._at = {}
        else:
            raise TypeError(f"a log's position is a {{writer: position}} map, got {offset!r}")

    def position(self) -> dict[str, int]:
        return dict(self._at)

    def read(self, n: int) -> pd.DataFrame:
        writers = self._writers()
        records: list[dict[str, Any]] = []
        if writers:
            self._turn = (self._turn + 1) % len(writers)  # no writer starves the others
            for w in writers[self._turn:] + writers[:self._turn]:
                if len(records) >= n:
                    break
                self._read_writer(w, n - len(records), records)
        return self._frame(records)

    def commit(self, offset: Any) -> int:
        """Delete the segments a completed checkpoint covers (below ``offset`` writer by
        writer), and the folders of dead writers read and committed to their end. Returns
        how many files or folders went."""
        if not isinstance(offset, dict):
            return 0
        gone = 0
        for w, pos in offset.items():
            path = Path(self.folder) / f"w-{w}"
            seg, byte = divmod(int(pos), SPAN)
            numbers = segments(path)
            for number in numbers:
                if number < seg:
                    (path / segment_name(number)).unlink(missing_ok=True)
                    gone += 1
            last = numbers[-1] if numbers else None
            if (last == seg and _size(path / segment_name(seg)) == byte
                    and not writer_alive(path)):
                shutil.rmtree(path, ignore_errors=True)
                gone += 1
        return gone

    def take_dead_letters(self) -> list[tuple[Any, str, int]]:
        dead, self._dead = self._dead, []
        return dead

    def describe(self) -> dict[str, Any]:
        return {"kind": "log", "folder": self.folder, "writers": len(self._writers()),
                "rate": None}

    # -- inside ------------------------------------------------------------------------------
    def _writers(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(n[2:] for n in names if n.startswith("w-"))

    def _read_writer(self, writer: str, budget: int, out: list[dict[str, Any]]) -> None:
        path = Path(self.folder) / f"w-{writer}"
        seg, byte = divmod(self._at.get(writer, 0), SPAN)
        while budget > 0:
            file = path / segment_name(seg)
            finished = (path / segment_name(seg + 1)).exists()  # before reading to its end
            try:
                chunk, eof = _chunk(file, byte)
            except FileNotFoundError:
                later = [s for s in segments(path) if s > seg]
                if not later:
                    break
                seg, byte = later[0], 0  # segments below were committed and deleted
                continue
            end = chunk.rfind(b"\n") + 1
            lines, used = self._lines(chunk[:end], seg * SPAN + byte, budget, out)
            budget -= lines
            byte += used
            if used < end:
                break  # the budget is spent
            if not eof:
                continue  # more of this segment to read
            if not finished:
                break  # at the end of the segment its writer appends to
            if end < len(chunk):  # the writer moved on and left a line unfinished: it died
                self._dead.append((chunk[end:end + 200].decode("utf-8", "replace"),
                                   "an unfinished line (its writer stopped mid-line)",
                                   seg * SPAN + byte))
            seg, byte = seg + 1, 0
        self._at[writer] = seg * SPAN + byte

    def _lines(self, data: bytes, start: int, budget: int,
               out: list[dict[str, Any]]) -> tuple[int, int]:
        """Parse up to ``budget`` lines of ``data`` into ``out``; (lines, bytes) taken."""
        taken, at = 0, 0
        while at < len(data) and taken < budget:
            stop = data.index(b"\n", at) + 1
            line, offset = data[at:stop - 1], start + at
            at = stop
            taken += 1
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as exc:
                self._dead.append((line[:200].decode("utf-8", "replace"),
                                   f"not a JSON line: {exc}", offset))
                continue
            t = record.get(EVENT_TIME) if isinstance(record, dict) else None
            if not isinstance(record, dict):
                self._dead.append((line[:200].decode("utf-8", "replace"),
                                   "not a JSON object", offset))
            elif isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                self._dead.append((record, f"no finite {EVENT_TIME} (seconds): {t!r}", offset))
            else:
                record[OFFSET] = offset
                out.append(record)
        return taken, at

    def _frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        if not records:
            return pd.DataFrame({EVENT_TIME: pd.Series(dtype="float64"),
                                 OFFSET: pd.Series(dtype="int64")})
        frame = pd.DataFrame.from_records(records)
        frame[EVENT_TIME] = frame[EVENT_TIME].astype("float64")
        frame[OFFSET] = frame[OFFSET].astype("int64")
        frame[INGEST_TS] = now()
        return frame.sort_values(EVENT_TIME, kind="stable").reset_index(drop=True)


def _chunk(file: Path, byte: int) -> tuple[bytes, bool]:
    """The bytes of ``file`` from ``byte``: at least one whole line if there is one (a line
    longer than ``CHUNK`` is read to its end), and whether they reach the end of the file."""
    with open(file, "rb") as f:
        f.seek(byte)
        data = f.read(CHUNK)
        eof = len(data) < CHUNK
        while not eof and b"\n" not in data:
            more = f.read(CHUNK)
            data += more
            eof = len(more) < CHUNK
        return data, eof


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1
