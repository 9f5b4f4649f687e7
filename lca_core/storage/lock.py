"""One writer per run: an OS-level lock file inside the run, and who holds it.

The lock is ``filelock``'s (``flock``/``LockFileEx``), held for the writer's lifetime, so
the operating system releases it when the writer dies, however it dies. Beside it the
writer leaves ``.lca-writer.json`` (pid, host, since) for the message a second writer
gets; a writer that closes removes it, so one found on taking the lock names a writer
that died without closing: the run is taken over, with a warning. Readers never lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import filelock

from ..errors import RunLockedError

LOCK_FILE = ".lca-lock"
HOLDER_FILE = ".lca-writer.json"
#: files a run directory holds besides its zarr data; written by lca, never the user's
LCA_FILES = (LOCK_FILE, HOLDER_FILE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _read_holder(directory: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads((directory / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "another process (no holder information)"
    return f"pid {holder.get('pid')} on {holder.get('host')} (writing since {holder.get('since')})"


class WriterLock:
    """The exclusive right to write the run in ``directory`` (created if needed)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(self.directory / LOCK_FILE, timeout=0)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = _read_holder(self.directory)
            if not self._stale(holder):
                raise RunLockedError(
                    f"{self.directory} is being written by {_describe(holder)}; a run has one "
                    "writer. Wait for it to finish, or write to another directory (readers "
                    "such as `lca analyze` may open it meanwhile)."
                ) from None
            (self.directory / LOCK_FILE).unlink(missing_ok=True)  # a lock file left behind
            self._lock.acquire()
        previous = _read_holder(self.directory)
        if previous is not None:
            warnings.warn(
                f"taking over {self.directory} from {_describe(previous)}, which ended "
                "without closing the run; its committed steps are kept",
                stacklevel=3,
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self.directory / f"{HOLDER_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(holder), encoding="utf-8")
        os.replace(tmp, self.directory / HOLDER_FILE)

    @staticmethod
    def _stale(holder: dict[str, Any] | None) -> bool:
        """A lock file whose holder, on this host, is dead (only a lock that the OS does
        not release by itself, on a file system without OS locks, can be left like this)."""
        if holder is None or holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        return isinstance(pid, int) and not _alive(pid)

    def release(self) -> None:
        """Give the run up: the holder file first, so no one reads a holder that left."""
        if self._lock.is_locked:
            (self.directory / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()
