"""Writing files so that readers see the old content or the whole new one, never part.

Folders fusionkit creates are private to their owner (mode 0700): they hold pickles, and
whoever can write one can make the next reader run code (every pickle is also signed; see
``fusionkit._signing``). A rename is durable only once its folder is synced, so
``write_atomic`` syncs the folder after the rename.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def make_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents with mode 0700 (existing folders are left as
    they are), syncing each new folder's parent so the new entry survives a crash."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile
            continue
        fsync_dir(folder.parent)


def fsync_dir(path: Path) -> None:
    """Sync a folder, so the renames and new entries in it are on disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync folders (some network mounts)
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, sync_dir: bool = True) -> None:
    """Write ``data`` to ``path`` through a synced temporary file (mode 0600) renamed into
    place, then sync the folder so the rename itself is durable (about 2 ms on ext4; with
    ``sync_dir=False`` the caller syncs it later, e.g. with the next file of the folder)."""
    make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
