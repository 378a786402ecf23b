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
from collections.abc import Callable, Iterable, Mapping
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
    """Moves a populated `directory` aside (refused while a live process holds its lock)."""
    if not directory.is_dir() or not any(p.name != LOCK_NAME for p in directory.iterdir()):
        return
    holder = _read_lock(directory / LOCK_NAME)
    if holder and _alive(holder):
        raise RunDirError(f"{directory} is in use by {_describe(holder)}; it cannot be moved aside now")
    say(f"moved the previous contents of {directory} to {move_aside(directory)}")


def check_manifest(directory: str | os.PathLike, settings: Mapping[str, Any], *, kind: str,
                   fresh_hint: str = "a new output directory",
                   legacy_settings: Callable[[pathlib.Path], Mapping[str, Any] | None] | None = None,
                   info: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Makes `directory` ready for a `kind` run whose results depend on `settings` (flat).

    An empty or new directory gets a manifest. One with a manifest must match it: otherwise
    RunDirError names every differing key and `fresh_hint` (what to pass to start afresh). A
    populated directory without a manifest (written before manifests existed) is compared with
    `legacy_settings(directory)` where that can say what it was made with, and refused where
    not. `info` (model identity, commit) is recorded but never compared.
    """
    directory = pathlib.Path(directory).absolute()
    settings = flatten(settings)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / MANIFEST_NAME
    populated = any(p.name not in (LOCK_NAME, MANIFEST_NAME) for p in directory.iterdir())
    if manifest_path.exists():
        stored = read_json(manifest_path)
        if stored.get("kind") != kind:
            raise RunDirError(f"{directory} holds a {stored.get('kind')!r} run, not a {kind!r} run; use {fresh_hint}")
        stored_settings = stored.get("settings", {})
    elif populated:
        stored_settings = legacy_settings(directory) if legacy_settings else None
        if stored_settings is None:
            raise RunDirError(f"{directory} already has files but no {MANIFEST_NAME}, so what made them is "
                              f"unknown; use {fresh_hint}")
        stored_settings = flatten(stored_settings)
    else:
        stored_settings = settings
    diffs = differences(stored_settings, settings)
    if diffs:
        raise RunDirError(f"{directory} holds a {kind} run made with other settings ({'; '.join(diffs)}); "
                          f"use {fresh_hint}")
    if not manifest_path.exists():
        atomic_write_json(manifest_path, {"kind": kind, "created": _now(), "git_commit": git_commit(),
                                          **dict(info or {}), "settings": settings})
    return directory


def claim(directory: str | os.PathLike, settings: Mapping[str, Any], *, kind: str, fresh: bool = False,
          fresh_hint: str = "a new output directory, or --fresh to move the old one aside",
          legacy_settings: Callable[[pathlib.Path], Mapping[str, Any] | None] | None = None,
          info: Mapping[str, Any] | None = None, enabled: bool = True) -> "DirLock":
    """Everything a run does before it writes into `directory`, in this order: move an old run
    aside if `fresh`, take the lock, check (or write) the manifest. Returns the held lock; use
    it as a context manager. `enabled=False` (non-main processes of a multi-host run) does
    nothing."""
    directory = pathlib.Path(directory).absolute()
    lock = DirLock(directory, enabled=enabled)
    if not enabled:
        return lock
    if fresh:
        start_fresh(directory)
    lock.acquire()
    try:
        check_manifest(directory, settings, kind=kind, fresh_hint=fresh_hint, legacy_settings=legacy_settings,
                       info=info)
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

def _read_lock(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError):
        return {}  # unreadable: written by something else; treated as stale below


def _alive(holder: Mapping[str, Any]) -> bool:
    """Whether a lock's holder still runs (a holder on another host counts as alive: unknowable)."""
    if not holder.get("pid"):
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: Mapping[str, Any]) -> str:
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {holder.get('started')})"


class DirLock:
    """An exclusive claim on a directory: a lock file holding the pid and host of its holder.

    A live holder means a one-line refusal; a holder that is gone (same host, pid not running)
    is taken over with a warning. Use as a context manager; `enabled=False` (non-main processes
    of a multi-host run) makes it a no-op.
    """

    def __init__(self, directory: str | os.PathLike, *, enabled: bool = True):
        self.path = pathlib.Path(directory).absolute() / LOCK_NAME
        self.enabled = enabled
        self._held = False

    def acquire(self) -> "DirLock":
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        for _ in range(3):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".lock.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            try:
                os.link(tmp, self.path)  # atomic, and fails if a lock exists: never a half-written lock
                self._held = True
                return self
            except FileExistsError:
                holder = _read_lock(self.path)
                if holder is None:
                    continue  # released meanwhile
                if _alive(holder):
                    hint = ("wait for it to finish, or use another output directory"
                            + (f" (delete {self.path} if that process is gone)"
                               if holder.get("host") != me["host"] else ""))
                    raise RunDirError(f"{self.path.parent} is in use by {_describe(holder)}; {hint}") from None
                say(f"warning: taking over the stale lock of {_describe(holder)} in {self.path.parent} "
                    f"(that process is gone)")
                self.path.unlink(missing_ok=True)
            finally:
                pathlib.Path(tmp).unlink(missing_ok=True)
        raise RunDirError(f"could not lock {self.path.parent}: another process keeps taking it")

    def release(self) -> None:
        if self._held:
            holder = _read_lock(self.path)
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "DirLock":
        return self if self._held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
