"""The run directories' messages: the one-line refusal a user can act on, and progress lines."""

from __future__ import annotations

import pathlib
import sys


class RunDirError(Exception):
    """A refusal the user can act on; launchers print it as one line."""


def say(message: str) -> None:
    """A progress line for the user (stderr, flushed, so it shows before slow work starts)."""
    print(message, file=sys.stderr, flush=True)


def unwritable(directory: pathlib.Path, err: OSError) -> RunDirError:
    reason = err.strerror or type(err).__name__
    return RunDirError(f"cannot write to {directory}: {reason}; choose a writable output directory")
