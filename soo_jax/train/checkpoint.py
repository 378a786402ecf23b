"""Train checkpoints with orbax: LoRA params, optimizer state, step, and JSON metadata.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
never leaves a checkpoint that looks finished. Base weights are never saved: they always come
from the original model checkpoint. The metadata records the data position, the dropout seed,
the LoRA config and the run config, so a run resumes exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from soo_jax.lora import LoRAConfig, apply_lora
from soo_jax.models.transformer import CausalLM
from soo_jax.run_dir import RunDirError, say


class CheckpointError(RunDirError):
    """A checkpoint that cannot serve this run (unreadable, or for another model/LoRA config)."""


@contextlib.contextmanager
def _stderr_held_back():
    """Holds back what is written to stderr (file descriptor 2) inside the block and writes it
    out only if the block succeeds: a corrupt file makes tensorstore's callbacks print dozens of
    'Event loop is closed' tracebacks before the one exception that matters."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            # The failed read's late callbacks go on printing from other threads: wait until
            # they have been quiet for half a second (at most 10 s).
            size, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 10
            while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
                time.sleep(0.1)
                now = os.fstat(held.fileno()).st_size
                if now != size:
                    size, quiet_since = now, time.monotonic()
            os.dup2(saved, 2)
            raise
        else:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
        finally:
            os.close(saved)


def stored_lora_shapes(step_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """{LoRA tensor name: shape} of a saved step, read from orbax's metadata (no array is read)."""
    tree = ocp.StandardCheckpointHandler().metadata(pathlib.Path(step_dir) / "state")
    return {name: tuple(leaf.shape) for name, leaf in tree["lora"].items()}


def check_lora_shapes(stored: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], where) -> None:
    """Names and shapes of a stored LoRA state against the model's, before orbax restores it (orbax
    would answer a mismatch with a tree dump of hundreds of lines)."""
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    wrong = [f"{k} {tuple(stored[k])} vs {tuple(expected[k])}" for k in sorted(set(stored) & set(expected))
             if tuple(stored[k]) != tuple(expected[k])]
    if missing or extra or wrong:
        parts = ([f"{len(missing)} tensors missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} unexpected (e.g. {extra[0]})"] if extra else []) + \
                ([f"{len(wrong)} with other shapes (e.g. {wrong[0]}, stored vs this model)"] if wrong else [])
        raise CheckpointError(f"{where} holds a LoRA state for another model or LoRA config: {'; '.join(parts)}")


class TrainCheckpointer:
    def __init__(self, directory: str | pathlib.Path, *, save_every: int, max_to_keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        self.save_every = max(int(save_every), 1)
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def path_of(self, step: int) -> pathlib.Path:
        return self.directory / str(step)

    def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
        """Saves at multiples of `save_every` (or when forced); returns whether it saved."""
        if not force and step % self.save_every:
            return False
        if step in self._manager.all_steps():
            return False
        # Finished before training goes on (a LoRA state is small): a failed write (a full disk)
        # is raised here, and tensorstore's late callbacks' 'Event loop is closed' tracebacks are
        # held back with it instead of landing between progress lines.
        with _stderr_held_back():
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                             meta=ocp.args.JsonSave(meta)), force=True)
            self._manager.wait_until_finished()
        return True

    def restore(self, abstract_state: Any, step: int | None = None, *,
                fall_back_to_previous: bool = False) -> tuple[Any, dict]:
        """Restores onto the shapes, dtypes and shardings of `abstract_state` (ShapeDtypeStructs).

        The stored LoRA tensors are checked against `abstract_state.lora` first. A step that
        cannot be read raises CheckpointError naming it, unless `fall_back_to_previous`: then it
        is moved to `<checkpoints>.unreadable/` and the next older step is tried.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        expected = {k: tuple(v.shape) for k, v in abstract_state.lora.items()}
        while True:
            try:
                with _stderr_held_back():
                    stored = stored_lora_shapes(self.path_of(step))
                check_lora_shapes(stored, expected, self.path_of(step))
                with _stderr_held_back():
                    restored = self._manager.restore(step, args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return restored.state, restored.meta
            except CheckpointError:
                raise
            except Exception as err:  # noqa: BLE001  (any read failure of this step: the message says which)
                older = [s for s in self._manager.all_steps() if s < step]
                reason = " ".join(str(err).split())[:300] or type(err).__name__
                if not fall_back_to_previous:
                    hint = (f"the older step {max(older)} may be intact: rerun with --resume_from_previous to move "
                            f"step {step} aside and resume from the newest readable step" if older else
                            "there is no older step: rerun with --fresh to start again")
                    raise CheckpointError(f"checkpoint step {step} ({self.path_of(step)}) cannot be read "
                                          f"({type(err).__name__}: {reason}); {hint}") from err
                if not older:
                    raise CheckpointError(f"checkpoint step {step} ({self.path_of(step)}) cannot be read and "
                                          f"no older step exists; rerun with --fresh to start again") from err
                aside_root = self.directory.with_name(self.directory.name + ".unreadable")
                aside_root.mkdir(exist_ok=True)
                moved = self.path_of(step).rename(aside_root / f"{step}.{time.strftime('%Y%m%dT%H%M%S')}")
                say(f"checkpoint step {step} cannot be read ({type(err).__name__}); moved it to {moved}, "
                    f"trying step {max(older)}")
                self._manager.reload()
                step = max(older)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def abstract_like(tree: Any, shardings: Any = None) -> Any:
    """ShapeDtypeStructs (with shardings where given) for restoring onto a known layout."""
    if shardings is None:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None)),
                            tree)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def lora_config_to_json(config: LoRAConfig) -> dict:
    """JSON-shaped (tuples as lists), so it compares equal to what a checkpoint's metadata holds."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def lora_config_from_json(raw: dict) -> LoRAConfig:
    raw = dict(raw)
    raw["targets"] = tuple(raw["targets"])
    raw["layers"] = tuple(raw["layers"]) if raw.get("layers") is not None else None
    return LoRAConfig(**raw)


def restore_lora_into(model: CausalLM, checkpoint_dir: str | pathlib.Path, step: int | None = None,
                      ) -> tuple[CausalLM, dict]:
    """Attaches the LoRA adapter of a train checkpoint to a freshly loaded base model, in place.

    `checkpoint_dir` is the run's checkpoint directory (latest step unless `step`) or one step's
    directory. Returns (model, metadata).
    """
    from flax import nnx

    from soo_jax.train.step import SplitModel

    checkpoint_dir = pathlib.Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():  # orbax would create it, leaving an empty directory behind
        raise FileNotFoundError(f"checkpoint directory not found: {checkpoint_dir}")
    if (checkpoint_dir / "state").is_dir() and checkpoint_dir.name.isdigit():
        step, checkpoint_dir = int(checkpoint_dir.name), checkpoint_dir.parent
    manager = ocp.CheckpointManager(checkpoint_dir.absolute(),
                                    options=ocp.CheckpointManagerOptions(create=False, read_only=True))
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no train checkpoint in {checkpoint_dir}")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if "lora_config" not in meta:
        raise ValueError(f"checkpoint {checkpoint_dir / str(step)} has no LoRA config in its metadata")
    apply_lora(model, lora_config_from_json(meta["lora_config"]), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    check_lora_shapes(stored_lora_shapes(checkpoint_dir / str(step)),
                      {k: tuple(np.shape(v)) for k, v in split.initial_lora.items()}, checkpoint_dir / str(step))
    # Without a target orbax returns the saved tree as plain containers; only "lora" is used.
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    lora = {k: np.asarray(v) for k, v in restored.state["lora"].items()}
    missing = set(split.initial_lora) - set(lora)
    if missing:
        raise KeyError(f"checkpoint {checkpoint_dir / str(step)} lacks LoRA tensors {sorted(missing)[:5]}")
    nnx.update(model, split.lora_state(lora))
    manager.close()
    return model, meta
