"""One writer per store: an exclusive lock on the data dir, held while the server runs.

Two servers on one data dir would both commit task 1 and leave a store that never starts
again, so the second is refused at start, naming the holder. The lock is an ``flock`` on
``<data-dir>/server.lock``: the kernel drops it when the holder dies, even by SIGKILL, so
a crashed server never blocks its successor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

LOCK_FILE = "server.lock"


class StoreLockedError(Exception):
    """Another live server holds the data dir."""


class DataDirLock:
    """The data dir's exclusive lock; ``acquire`` it at start, ``release`` at exit."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreLockedError naming the server that holds it."""
        file = open(self.path, "a+")  # noqa: SIM115 - held open for the server's lifetime
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "an unknown process"
            file.close()
            raise StoreLockedError(
                f"the data dir {self.path.parent} is in use by another sparsecl server "
                f"({describe(holder)}); stop it first, or give this one another --data-dir"
            ) from None
        self._file = file
        self.note()

    def note(self, address: str = "") -> None:
        """Record who holds the lock (shown to a refused second server)."""
        if self._file is None:
            return
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "address": address,
        }
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(holder))
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def describe(holder: str | dict[str, Any]) -> str:
    """A holder (the lock file's JSON, or the store lease's) as 'pid N on HOST, serving
    ADDRESS, since TIME', saying only what it knows."""
    try:
        h = json.loads(holder) if isinstance(holder, str) else holder
        where = f", serving {h['address']}" if h.get("address") else ""
        since = f", since {h['since']}" if h.get("since") else ""
        return f"pid {h['pid']} on {h['host']}{where}{since}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(holder)[:200]
