"""Signatures on what fusionkit unpickles from its storage folder.

Unpickling runs code, so a checksum kept next to a file protects nothing: whoever can write
the file can write its sum. Every pickle fusionkit reads back (checkpoints, the stage table,
registry versions, schemas) is signed with HMAC-SHA256 under a key kept outside the storage
folder, and the signature is checked (``hmac.compare_digest``) before anything is loaded.

The key, one rule: ``$FUSIONKIT_SECRET`` if set, else the file ``secret`` in fusionkit's home
folder (``$FUSIONKIT_HOME``, by default ``~/.fusionkit``: the folder whose ``storage/``
``connect()`` uses by default). The file is created on first use with 32 random bytes (as
64 hex digits, so ``export FUSIONKIT_SECRET=$(cat ~/.fusionkit/secret)`` gives the same key),
mode 0600. Every process that reads the storage must have the same key: on one machine the
file does it; on a cluster set ``FUSIONKIT_SECRET`` on every node (docs/cluster.md).

A signature names the key it was made with by a key id (an HMAC of a constant, which tells
nothing of the key), so a folder written under another key is refused with a sentence that
says so, not mistaken for a corrupt file. A storage folder also records its key id in
``.fusionkit-key`` when it is first used, so ``connect()`` refuses it at once.

Examples
--------
>>> blob = dumps({"offset": 10})
>>> loads(blob, "example")
{'offset': 10}
>>> loads(blob[:-1] + b"!", "example")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
fusionkit.errors.CorruptCheckpointError: example does not match its signature ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
from pathlib import Path
from typing import Any

from fusionkit import _moved
from fusionkit._files import fsync_dir, make_private_dir
from fusionkit.errors import CorruptCheckpointError, StorageKeyError

ENV = "FUSIONKIT_SECRET"
MAGIC = b"FKSIG1 "  # a sealed file: MAGIC, "<key id>:<hex tag>", newline, the payload
MARK = ".fusionkit-key"  # a storage folder's key id


def home() -> Path:
    """fusionkit's home folder: ``$FUSIONKIT_HOME``, else ``~/.fusionkit``."""
    return Path(os.environ.get("FUSIONKIT_HOME", Path.home() / ".fusionkit")).expanduser()


def secret_path() -> Path:
    return home() / "secret"


def _source() -> str:
    return f"${ENV}" if os.environ.get(ENV) else str(secret_path())


def key() -> bytes:
    """This process's signing key (see the module's docstring), created on first use."""
    env = os.environ.get(ENV)
    if env:
        return env.strip().encode()
    path = secret_path()
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    make_private_dir(path.parent)
    # written whole under a private temporary name, then linked into place: a process that
    # loses the race reads the winner's complete key, never a half-written file
    tmp = path.with_name(f".secret.{os.getpid()}.{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            fsync_dir(path.parent)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    data = path.read_text().strip()
    if not data:
        raise StorageKeyError(f"the fusionkit secret file {path} is empty; delete it (a new "
                              f"key is made) or set {ENV}")
    return data.encode()


def key_id(k: bytes | None = None) -> str:
    """A short name of a key that tells nothing of it."""
    return hmac.new(key() if k is None else k, b"fusionkit key id", hashlib.sha256).hexdigest()[:16]


def sign(data: bytes) -> str:
    """``"<key id>:<hex HMAC-SHA256 of data>"``."""
    k = key()
    return f"{key_id(k)}:{hmac.new(k, data, hashlib.sha256).hexdigest()}"


def verify(data: bytes, signature: str | None, where: str) -> None:
    """Raise unless ``signature`` is this key's signature of ``data``: ``StorageKeyError``
    if it was made with another key, ``CorruptCheckpointError`` if it is missing or wrong."""
    if not signature or not isinstance(signature, str) or ":" not in signature:
        raise CorruptCheckpointError(
            f"{where} carries no fusionkit signature (written by an earlier fusionkit, or not "
            f"by fusionkit); it was refused, not loaded")
    kid, tag = signature.split(":", 1)
    k = key()
    mine = key_id(k)
    if not hmac.compare_digest(kid, mine):
        raise StorageKeyError(
            f"{where} was written with a different fusionkit secret (key id {kid}; this "
            f"process has key id {mine}, from {_source()}); set {ENV} to that key or use "
            f"another storage folder")
    if not hmac.compare_digest(tag, hmac.new(k, data, hashlib.sha256).hexdigest()):
        raise CorruptCheckpointError(
            f"{where} does not match its signature (changed after fusionkit wrote it, or "
            f"corrupt); it was refused, not loaded")


def seal(data: bytes) -> bytes:
    """``data`` with its signature in front, as one file's content."""
    return MAGIC + sign(data).encode() + b"\n" + data


def unseal(blob: bytes, where: str) -> bytes:
    """The payload of a sealed file, signature verified."""
    if not blob.startswith(MAGIC) or b"\n" not in blob[:200]:
        verify(blob, None, where)
    head, data = blob[len(MAGIC):].split(b"\n", 1)
    verify(data, head.decode("ascii", "replace"), where)
    return data


def dumps(obj: Any, pickler: Any = pickle) -> bytes:
    """Pickle ``obj`` (with ``pickler``, e.g. cloudpickle) and seal it."""
    return seal(pickler.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def loads(blob: bytes, where: str) -> Any:
    """Verify a sealed pickle's signature, then (only then) unpickle it."""
    return _moved.loads(unseal(blob, where))


def sign_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (JSON-able) with a ``signature`` over its other fields."""
    body = {k: v for k, v in record.items() if k != "signature"}
    return {**body, "signature": sign(_canonical(body))}


def verify_record(record: dict[str, Any], where: str) -> None:
    """Raise unless ``record`` carries this key's signature over its other fields."""
    body = {k: v for k, v in record.items() if k != "signature"}
    verify(_canonical(body), record.get("signature"), where)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def claim_folder(folder: str | os.PathLike[str]) -> None:
    """Make a storage folder (mode 0700) and record this key's id in it; refuse a folder
    whose recorded key id is another key's, with ``StorageKeyError``."""
    folder = Path(folder)
    make_private_dir(folder)
    mark = folder / MARK
    mine = key_id()
    try:
        fd = os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        theirs = mark.read_text().strip()
        if theirs and not hmac.compare_digest(theirs, mine):
            raise StorageKeyError(
                f"the storage folder {folder} was written with a different fusionkit secret "
                f"(key id {theirs}; this process has key id {mine}, from {_source()}); set "
                f"{ENV} to that key or use another storage folder") from None
        return
    with os.fdopen(fd, "w") as f:
        f.write(mine + "\n")
