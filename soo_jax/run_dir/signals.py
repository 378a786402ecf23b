"""Interrupts: SIGINT/SIGTERM (the preemption signal on pods and SLURM) become a flag a training
loop reads between steps, so it can save its state before exiting."""

from __future__ import annotations

import os
import signal

from soo_jax.run_dir.messages import say


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
