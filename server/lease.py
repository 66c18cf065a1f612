"""One writer per remote store: a lease with an expiry, kept in the MLflow experiment.

Servers on two machines share no data dir to lock, so with ``--tracking-uri`` the writer
also holds a lease: an experiment tag naming it and when the lease expires, renewed every
third of its length. A second server that finds a lease waits until it would expire: a
live holder has renewed it by then and the newcomer is refused, naming the holder; a
holder killed with SIGKILL has not, and its successor takes over. MLflow has no
compare-and-set, so two servers starting within the same second can both write the tag;
each re-reads it after a pause and the one not named gives way, which leaves a window of
a few milliseconds (stated in the README).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from .lock import StoreLockedError, describe
from .store import StoreUnavailableError, TaskStore, WriterConflictError, redact

log = logging.getLogger("sparsecl.server")
LEASE_TAG = "sparsecl.writer"
SETTLE_SECONDS = 1.0  # between writing the lease and reading it back


class StoreLease:
    """The lease of the server that writes ``store``; ``acquire`` at start, ``release`` at exit."""

    def __init__(self, store: TaskStore, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.id = uuid.uuid4().hex
        self.address = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict[str, Any] | None:
        tags = self.store.client.get_experiment(self.store.experiment_id).tags
        try:
            value = json.loads(tags[LEASE_TAG])
            return value if isinstance(value, dict) else None
        except (KeyError, ValueError):
            return None

    def _write(self) -> None:
        holder = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "address": self.address,
            "expires": time.time() + self.seconds,
        }
        self.store.client.set_experiment_tag(
            self.store.experiment_id, LEASE_TAG, json.dumps(holder)
        )

    def _refuse(self, holder: dict[str, Any]) -> StoreLockedError:
        left = max(0.0, float(holder.get("expires", 0)) - time.time())
        return StoreLockedError(
            f"the store {redact(self.store.tracking_uri)} is written by another sparsecl "
            f"server ({describe(holder)}); its lease "
            f"expires in {left:.0f} s unless renewed: stop it first, or wait for the lease of "
            "a server that died to expire"
        )

    def acquire(self) -> None:
        """Take the lease or raise StoreLockedError naming the live holder."""
        try:
            self._take()
        except StoreLockedError:
            raise
        except Exception as e:  # MLflow wraps HTTP and SQL errors in many types
            raise StoreUnavailableError(
                f"MLflow store {redact(self.store.tracking_uri)} failed to lease: {e}"
            ) from e
        self._thread = threading.Thread(target=self._renew, name="sparsecl-lease", daemon=True)
        self._thread.start()
        self.store.fence = self.check

    def check(self) -> None:
        """Raise WriterConflictError unless the lease is still this server's (the store
        calls it right before each commit point)."""
        holder = self._read()
        if not holder or holder.get("id") != self.id:
            raise WriterConflictError(
                "this server no longer holds the store's writer lease "
                f"({describe(holder) if holder else 'nobody holds it'}): another sparsecl "
                "server writes this store; the task is not committed"
            )

    def _take(self) -> None:
        holder = self._read()
        if holder and holder.get("id") != self.id:
            left = float(holder.get("expires", 0)) - time.time()
            if left > 0:  # wait it out: a live holder renews, a dead one lets it expire
                time.sleep(min(left, self.seconds) + SETTLE_SECONDS)
                now = self._read()
                if now and now.get("id") != self.id and now != holder:
                    raise self._refuse(now)
        self._write()
        time.sleep(SETTLE_SECONDS)
        holder = self._read()
        if not holder or holder.get("id") != self.id:
            raise self._refuse(holder or {})

    def note(self, address: str) -> None:
        """Name the address served in the lease (shown to a refused second server)."""
        self.address = address

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                holder = self._read()
                if holder and holder.get("id") != self.id:
                    log.error("the store's writer lease was taken over: %s", holder)
                    continue
                self._write()
            except Exception as e:  # the store is down for a while: the next turn retries
                log.warning("could not renew the store's writer lease: %s", e)

    def release(self) -> None:
        """Stop renewing and drop the lease, if it is still ours (best effort)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            holder = self._read()
            if holder and holder.get("id") == self.id:
                self.store.client.delete_experiment_tag(self.store.experiment_id, LEASE_TAG)
        except Exception as e:
            log.warning("could not release the store's writer lease: %s", e)
