"""The manifest: the settings a directory's results depend on, compared on every rerun, and
`claim`, everything a run does before it writes into its directory."""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Mapping
from typing import Any

from soo_jax.run_dir.files import atomic_write_json, move_aside, prepare_directory, read_json
from soo_jax.run_dir.lock import LOCK_NAME, DirLock, utc_now
from soo_jax.run_dir.messages import RunDirError, say, unwritable
from soo_jax.run_dir.settings import differences, flatten

MANIFEST_NAME = "manifest.json"


def git_commit() -> str | None:
    """The checkout's commit (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=pathlib.Path(__file__).resolve().parent, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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
            atomic_write_json(manifest_path, {"kind": kind, "created": utc_now(), "git_commit": git_commit(),
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
