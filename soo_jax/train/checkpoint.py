"""Train checkpoints with orbax: LoRA params, optimizer state, step, and JSON metadata.

Orbax writes each step into a temporary directory and renames it when complete, so a crash
never leaves a checkpoint that looks finished. Base weights are never saved: they always come
from the original model checkpoint. The metadata records the data position, the dropout seed,
the LoRA config and the run config, so a run resumes exactly where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from soo_jax.lora import LoRAConfig, apply_lora
from soo_jax.models.transformer import CausalLM


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
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                         meta=ocp.args.JsonSave(meta)), force=True)
        return True

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores onto the shapes, dtypes and shardings of `abstract_state` (ShapeDtypeStructs)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return restored.state, restored.meta

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
    if (checkpoint_dir / "state").is_dir() and checkpoint_dir.name.isdigit():
        step, checkpoint_dir = int(checkpoint_dir.name), checkpoint_dir.parent
    manager = ocp.CheckpointManager(checkpoint_dir.absolute())
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no train checkpoint in {checkpoint_dir}")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    if "lora_config" not in meta:
        raise ValueError(f"checkpoint {checkpoint_dir / str(step)} has no LoRA config in its metadata")
    apply_lora(model, lora_config_from_json(meta["lora_config"]), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    # Without a target orbax returns the saved tree as plain containers; only "lora" is used.
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    lora = {k: np.asarray(v) for k, v in restored.state["lora"].items()}
    missing = set(split.initial_lora) - set(lora)
    if missing:
        raise KeyError(f"checkpoint {checkpoint_dir / str(step)} lacks LoRA tensors {sorted(missing)[:5]}")
    nnx.update(model, split.lora_state(lora))
    manager.close()
    return model, meta
