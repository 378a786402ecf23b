"""The directory lock: an exclusive claim on a run directory that a second process is refused."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket
from collections.abc import Mapping
from typing import Any

from soo_jax.run_dir.files import prepare_directory
from soo_jax.run_dir.messages import RunDirError, unwritable

LOCK_NAME = ".lock"


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second: the lock's and the manifest's time stamps."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _read_lock(path: pathlib.Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return {}  # being written, or not ours: the flock, not the text, says whether it is held
    return holder if isinstance(holder, dict) else {}


def _describe(holder: Mapping[str, Any] | None) -> str:
    if not holder or not holder.get("pid"):
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"


class DirLock:
    """An exclusive claim on a directory: `fcntl.flock` on its `.lock` file. The kernel releases
    the lock when its process ends, however it ends (SIGKILL, a crash, a reboot), so a lock is
    never stale and needs no heuristics. The file holds the holder's pid, host and start time,
    for the refusal a second process gets ("in use by pid N on HOST since T"); a release removes
    it. Use as a context manager; `enabled=False` (non-main processes of a multi-host run) makes
    it a no-op.

    When the block raises and nothing in the directory changed since the lock was taken but the
    files `claim` wrote (`created_files`: its manifest), those go again, and the directory too if
    it was created here: a run that fails before its first write leaves the directory as it
    found it.
    """

    def __init__(self, directory: str | os.PathLike, *, enabled: bool = True):
        self.path = pathlib.Path(directory).absolute() / LOCK_NAME
        self.enabled = enabled
        self._fd: int | None = None
        self.created_directory = False
        self.created_files: list[pathlib.Path] = []
        self._found: dict[str, tuple] | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, refusal_hint: str = "wait for it to finish, or use another output directory") -> "DirLock":
        import fcntl

        if not self.enabled or self._fd is not None:
            return self
        directory = self.path.parent
        self.created_directory = not directory.exists()
        prepare_directory(directory)
        self._found = self._listing()
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise unwritable(directory, err) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirError(f"{directory} is in use by {_describe(_read_lock(self.path))}; "
                                  f"{refusal_hint}") from None
            except OSError as err:
                os.close(fd)
                raise RunDirError(f"cannot lock {self.path}: {err.strerror}; use an output directory on a "
                                  f"file system with file locks") from None
            # The previous holder may have removed the file between our open and our flock: the
            # lock we hold is then on a file nobody else sees, so take the one at the path.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                break
            os.close(fd)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now()}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(me).encode())
        except OSError as err:
            self._fd = fd
            self.release()
            raise unwritable(directory, err) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            # Removed while still held, so no one reads our pid from a free lock.
            if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                self.path.unlink()
        except OSError:
            pass  # moved aside with its directory (start_fresh), or removed by hand
        finally:
            os.close(fd)  # releases the flock

    def _listing(self) -> dict[str, tuple]:
        """Name -> (size, mtime) of the directory's entries, the lock left out."""
        out = {}
        for p in self.path.parent.iterdir():
            if p.name != LOCK_NAME:
                st = p.lstat()
                out[p.name] = (st.st_size, st.st_mtime_ns)
        return out

    def restore(self) -> None:
        """Removes what `claim` wrote (see the class docstring), if nothing else changed."""
        directory = self.path.parent
        created = {p.name for p in self.created_files}
        try:
            now = {name: v for name, v in self._listing().items() if name not in created}
            if self._found is None or now != {k: v for k, v in self._found.items() if k not in created}:
                return
            for path in self.created_files:
                path.unlink(missing_ok=True)
            self.release()
            if self.created_directory:
                directory.rmdir()
        except OSError:
            pass

    def __enter__(self) -> "DirLock":
        return self if self._fd is not None else self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.created_files:
            self.restore()
        self.release()
