"""Output directories that never mislabel a result: a manifest, an exclusive lock, atomic writes.

Every launcher writes into a directory it may find already populated by an earlier run (a
resume after a crash, or a rerun with other settings). The manifest records the settings the
results depend on; a rerun with the same settings resumes, one with different settings is
refused with a line naming each differing key, and `fresh=True` moves the old directory aside
(it is never deleted). The lock keeps a second process out of a directory that one is using.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"


class RunDirError(Exception):
    """A refusal the user can act on; launchers print it as one line."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped a run after its state was saved; `exit_code` is 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopRequest:
    """Turns SIGINT/SIGTERM (the preemption signal on pods and SLURM) into a flag that a
    training loop reads between steps, so it can save its state before exiting. A second
    signal while the first is handled stops at once (the default behaviour)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.signum = signum
        say(f"received {signal.Signals(signum).name}: finishing the current step, then saving and exiting")

    def __bool__(self) -> bool:
        return self.signum is not None

    def interrupted(self, message: str) -> Interrupted:
        return Interrupted(message, 128 + int(self.signum))

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}


def say(message: str) -> None:
    """A progress line for the user (stderr, flushed, so it shows before slow work starts)."""
    print(message, file=sys.stderr, flush=True)


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> pathlib.Path:
    """Writes `text` (or bytes) to `path` so that a reader, or a crash, sees the old file or the new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or a RunDirError naming the file when it is not valid JSON."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err}); repair or delete it") from None


def git_commit() -> str | None:
    """The checkout's commit (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=pathlib.Path(__file__).resolve().parent, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def file_digest(path: str | os.PathLike) -> str:
    """Short content hash: a result depends on a file's bytes, not on where it lies."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def model_identity(model_dir: str | os.PathLike) -> str:
    """A model directory's config.json hash and total weight-file size: the same path can hold
    another model, and the same model can sit at another path (a moved cache)."""
    model_dir = pathlib.Path(model_dir)
    config = model_dir / "config.json"
    digest = file_digest(config) if config.is_file() else "none"
    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return f"config.json sha256 {digest}, {size} bytes of safetensors"


# ---------------------------------------------------------------------------------------------
# Settings: flat {"section.key": JSON value} dicts, so differences name keys as the CLI spells them
# ---------------------------------------------------------------------------------------------

def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": (1, 2)}} -> {"a.b": [1, 2]} (JSON-normal values: tuples become lists)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def without(settings: Mapping[str, Any], ignored: Iterable[str]) -> dict[str, Any]:
    """`settings` less the keys equal to, or under, any of `ignored` ("eval" drops "eval.x")."""
    ignored = tuple(ignored)
    return {k: v for k, v in settings.items()
            if not any(k == i or k.startswith(i + ".") for i in ignored)}


def differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key: stored -> current' for every key whose value differs (or exists on one side only)."""
    missing = object()
    out = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, missing), current.get(key, missing)
        if old != new:
            show = lambda v: "(unset)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key}: {show(old)} -> {show(new)}")
    return out


# ---------------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def move_aside(directory: pathlib.Path) -> pathlib.Path:
    """Renames a directory to `<name>.old-<UTC time>` and returns the new path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = directory.with_name(f"{directory.name}.old-{stamp}")
    n = 1
    while aside.exists():
        aside, n = directory.with_name(f"{directory.name}.old-{stamp}-{n}"), n + 1
    directory.rename(aside)
    return aside


def start_fresh(directory: pathlib.Path) -> None:
    """Moves a populated `directory` aside (refused while another process holds its lock)."""
    directory = pathlib.Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{directory} is a file, not a directory; choose another output directory")
    if not directory.is_dir() or not any(p.name != LOCK_NAME for p in directory.iterdir()):
        return
    lock = DirLock(directory).acquire(refusal_hint="it cannot be moved aside now")
    try:
        aside = move_aside(directory)
        (aside / LOCK_NAME).unlink(missing_ok=True)
    except OSError as err:
        raise unwritable(directory.parent, err) from None
    finally:
        lock.release()
    say(f"moved the previous contents of {directory} to {aside}")


def check_manifest(directory: str | os.PathLike, settings: Mapping[str, Any], *, kind: str,
                   fresh_hint: str = "a new output directory",
                   info: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Makes `directory` ready for a `kind` run whose results depend on `settings` (flat).

    An empty or new directory gets a manifest. One with a manifest must match it: otherwise
    RunDirError names every differing key and `fresh_hint` (what to pass to start afresh). A
    populated directory without a manifest was not made by this version and is refused. `info`
    (model identity, commit) is recorded but never compared.
    """
    directory = prepare_directory(directory)
    settings = flatten(settings)
    manifest_path = directory / MANIFEST_NAME
    populated = any(p.name not in (LOCK_NAME, MANIFEST_NAME) for p in directory.iterdir())
    if manifest_path.exists():
        stored = read_json(manifest_path)
        if stored.get("kind") != kind:
            raise RunDirError(f"{directory} holds a {stored.get('kind')!r} run, not a {kind!r} run; use {fresh_hint}")
        stored_settings = stored.get("settings", {})
    elif populated:
        raise RunDirError(f"{directory} already has files but no {MANIFEST_NAME}: it was not made by this "
                          f"version; use {fresh_hint}")
    else:
        stored_settings = settings
    diffs = differences(stored_settings, settings)
    if diffs:
        raise RunDirError(f"{directory} holds a {kind} run made with other settings ({'; '.join(diffs)}); "
                          f"use {fresh_hint}")
    if not manifest_path.exists():
        try:
            atomic_write_json(manifest_path, {"kind": kind, "created": _now(), "git_commit": git_commit(),
                                              **dict(info or {}), "settings": settings})
        except OSError as err:
            raise unwritable(directory, err) from None
    return directory


def claim(directory: str | os.PathLike, settings: Mapping[str, Any], *, kind: str, fresh: bool = False,
          fresh_hint: str = "a new output directory, or --fresh to move the old one aside",
          info: Mapping[str, Any] | None = None, enabled: bool = True) -> "DirLock":
    """Everything a run does before it writes into `directory`, in this order: move an old run
    aside if `fresh`, take the lock, check (or write) the manifest. Returns the held lock; use
    it as a context manager: if the block raises while the directory holds only the manifest
    this claim wrote, the directory is left as it was found (`DirLock.restore`). Validate every
    setting before calling this. `enabled=False` (non-main processes of a multi-host run) does
    nothing."""
    directory = pathlib.Path(directory).absolute()
    lock = DirLock(directory, enabled=enabled)
    if not enabled:
        return lock
    if fresh:
        start_fresh(directory)
    lock.acquire()
    manifest = directory / MANIFEST_NAME
    had_manifest = manifest.exists()
    try:
        check_manifest(directory, settings, kind=kind, fresh_hint=fresh_hint, info=info)
    except BaseException:
        lock.release()
        raise
    if not had_manifest:  # what a failure before any other write removes again (DirLock.restore)
        lock.created_files.append(manifest)
    return lock


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

def prepare_directory(directory: str | os.PathLike) -> pathlib.Path:
    """`directory`, created if need be; RunDirError (one line, what to do) when it is a file, or
    cannot be created (a read-only file system, no permission, a parent that is a file)."""
    directory = pathlib.Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{directory} is a file, not a directory; choose another output directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(directory, err) from None
    return directory


def unwritable(directory: pathlib.Path, err: OSError) -> RunDirError:
    reason = err.strerror or type(err).__name__
    return RunDirError(f"cannot write to {directory}: {reason}; choose a writable output directory")


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
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
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
