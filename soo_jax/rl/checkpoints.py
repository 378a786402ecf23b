"""Orbax checkpoints for the experiment's stages (atomic writes; orbax renames a finished
temporary directory into place, so a crash never leaves a half-written checkpoint behind).

A stage is finished when `done.json` exists; it is written last, and implies everything before
it. Its content is written first, as `done.pending.json`, so a kill after the final checkpoint
but before the marker leaves a stage that the next run completes by renaming the marker,
instead of training again into a checkpoint step that already exists.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import orbax.checkpoint as ocp

from soo_jax.run_dir import atomic_write_text


def _options() -> ocp.CheckpointManagerOptions:
    # Synchronous: the next chunk donates (overwrites) the arrays being saved.
    return ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False)


class StageCheckpoints:
    """`<stage>/progress` (latest full training state) and `<stage>/final` (trained agents)."""

    def __init__(self, stage_dir: pathlib.Path):
        self.dir = pathlib.Path(stage_dir).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._progress = ocp.CheckpointManager(self.dir / "progress", options=_options())
        self._final = ocp.CheckpointManager(self.dir / "final", options=_options())

    @property
    def done_path(self) -> pathlib.Path:
        return self.dir / "done.json"

    @property
    def pending_done_path(self) -> pathlib.Path:
        return self.dir / "done.pending.json"

    def is_done(self) -> bool:
        return self.done_path.exists() and self._final.latest_step() is not None

    def complete_interrupted_finish(self) -> bool:
        """A final checkpoint committed without its marker (killed in between): writes the
        marker from its pending copy. Returns whether the stage is now finished."""
        if self.is_done() or self._final.latest_step() is None or not self.pending_done_path.exists():
            return self.is_done()
        self.pending_done_path.replace(self.done_path)
        return True

    def latest_progress(self) -> int | None:
        return self._progress.latest_step()

    def save_progress(self, episodes_done: int, state: Any, history: list[dict]) -> None:
        self._progress.save(episodes_done, args=ocp.args.StandardSave(state), force=True)
        self._progress.wait_until_finished()
        _write_json(self.dir / "history.json", history)

    def restore_progress(self, abstract_state: Any) -> tuple[int, Any, list[dict]]:
        step = self._progress.latest_step()
        if step is None:
            raise FileNotFoundError(f"no progress checkpoint under {self.dir / 'progress'}")
        state = self._progress.restore(step, args=ocp.args.StandardRestore(abstract_state))
        history_path = self.dir / "history.json"
        history = json.loads(history_path.read_text()) if history_path.exists() else []
        return step, state, [h for h in history if h["episodes_done"] <= step]

    def save_final(self, agents: Any, info: dict, history: list[dict]) -> None:
        _write_json(self.dir / "history.json", history)
        _write_json(self.pending_done_path, info)
        if self._final.latest_step() is not None:  # a stale final from a run whose marker never came
            self._final.delete(self._final.latest_step())
        self._final.save(0, args=ocp.args.StandardSave(agents), force=True)
        self._final.wait_until_finished()
        self.pending_done_path.replace(self.done_path)  # last: marks the stage finished

    def restore_final(self, abstract_agents: Any) -> Any:
        if self._final.latest_step() is None:
            raise FileNotFoundError(
                f"stage result missing: no checkpoint under {self.dir / 'final'}; "
                f"run that stage first (--config.stage={self.dir.name})"
            )
        return self._final.restore(0, args=ocp.args.StandardRestore(abstract_agents))

    def done_info(self) -> dict:
        return json.loads(self.done_path.read_text())


def _write_json(path: pathlib.Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))
