"""Crash accounting for the store: how many records a process accepted and how many it settled.

The store answers the client first and commits later (in batches, every `flush_interval_ms`), so a
process killed with SIGKILL, an OOM kill or a segfault takes the records still queued with it. This
module makes that loss visible instead of silent. Every started store keeps two counters in a tiny
memory-mapped file next to the database (`.<db>.runs/<run id>`): records accepted into the queue and
records settled (committed, or dropped and counted). Writing them is a memory store, not a system
call, so the request path pays nothing; the kernel keeps the page when the process dies. The file
is locked (flock) for as long as its process lives and deleted when the store stops cleanly.

On start, the proxy's store claims the files of processes that died (their lock is free): accepted
minus settled is what the crash lost. A power failure or kernel crash can lose those pages too;
that case is not detected (see docs/durability.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
from pathlib import Path

log = logging.getLogger("shadoweval.store")

ACCEPTED, SETTLED = 0, 1
_SIZE = 16  # two unsigned 64-bit counters


class Journal:
    def __init__(self, db_path: Path, run_id: str) -> None:
        self.dir = db_path.with_name(f".{db_path.name}.runs")  # hidden: not one of the `<db>*` files
        self.path = self.dir / run_id
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        # before open() (or when the file cannot be made) the counters live in plain memory
        self.counts: memoryview = memoryview(bytearray(_SIZE)).cast("Q")

    def open(self) -> bool:
        """Move the counters into this run's file; False (and plain memory) when it cannot be made."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("crash accounting off: cannot create the run file",
                        extra={"path": str(self.path), "error": str(exc)})
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, _SIZE)
            mapped = mmap.mmap(fd, _SIZE)
        except OSError as exc:
            os.close(fd)
            log.warning("crash accounting off", extra={"path": str(self.path), "error": str(exc)})
            return False
        counts = memoryview(mapped).cast("Q")
        counts[ACCEPTED], counts[SETTLED] = self.counts[ACCEPTED], self.counts[SETTLED]
        self._fd, self._map, self.counts = fd, mapped, counts
        return True

    def close(self, *, clean: bool) -> None:
        """Release the file; `clean` (everything accepted was settled) deletes it. A file left behind
        is claimed by the next proxy that starts on this database."""
        if self._map is None or self._fd is None:
            return
        accepted, settled = self.counts[ACCEPTED], self.counts[SETTLED]
        self.counts.release()
        self.counts = memoryview(bytearray(_SIZE)).cast("Q")
        self.counts[ACCEPTED], self.counts[SETTLED] = accepted, settled
        self._map.close()
        if clean:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = self._map = None

    def claim_dead(self) -> int:
        """Records accepted but never settled by processes that died; their files are removed."""
        lost = 0
        try:
            names = [p for p in self.dir.iterdir() if p.name != self.path.name]
        except OSError:
            return 0
        for p in names:
            try:
                fd = os.open(p, os.O_RDWR)
            except OSError:
                continue  # claimed meanwhile by another store
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its process is alive
                if os.fstat(fd).st_nlink == 0:
                    continue  # another store claimed it between our open and our lock
                data = os.pread(fd, _SIZE, 0)
                if len(data) == _SIZE:
                    counts = memoryview(data).cast("Q")
                    lost += max(0, counts[ACCEPTED] - counts[SETTLED])
                p.unlink()
            finally:
                os.close(fd)
        return lost
