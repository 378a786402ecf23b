"""Hugging Face PEFT adapter files: export our trained LoRA, import a PEFT LoRA back.

PEFT stores, for a causal LM, `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`
[r, in] and `...lora_B.weight` [out, r]; ours are A [in, r] and B [r, out], so both transpose.
The directory (`adapter_model.safetensors` + `adapter_config.json`) loads with
`peft.PeftModel.from_pretrained(transformers_model, dir)` on any machine: its
`base_model_name_or_path` is the base model's Hub id where we know one (`base_model_hub_id`),
and the local path we trained from goes into our own `soo_jax_adapter.json` beside it. Our
adapters on the stacked decoder layers are written and read one layer at a time
(`soo_jax.lora.adapter_slices`), so the files are those of a per-layer model.

This is the LoRA layer's file format and needs nothing from training. The LoRA state of an orbax
training checkpoint is read by `soo_jax.train.checkpoint.restore_lora_into`, which stays with
the checkpoint format it reads (the train state's stacked LoRA arrays, `SplitModel`).
"""

from __future__ import annotations

import json
import os
import pathlib
import re

import numpy as np
from flax import nnx

from soo_jax.lora import LoRAConfig, adapter_slices, apply_lora
from soo_jax.models.gguf_import import atomic_directory
from soo_jax.models.safetensors_io import SafetensorsFile
from soo_jax.models.transformer import CausalLM
from soo_jax.run_dir import file_digest, read_json

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Our metadata (PEFT ignores it): where the base model lay on the machine that trained.
SOO_JAX_METADATA = "soo_jax_adapter.json"
# A Hub repository id ("org/name" or a legacy "name"); anything else is a filesystem path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def adapter_settings(directory: str | os.PathLike) -> dict[str, str]:
    """What a result computed with the adapter in `directory` depends on, as run manifests record
    it: its weights by content (a moved adapter is the same, a retrained one is not)."""
    return {"adapter.sha256": file_digest(pathlib.Path(directory) / ADAPTER_WEIGHTS)}


def _peft_prefix(path: tuple) -> str:
    *modules, = (str(p) for p in path)
    if modules == ["lm_head"]:
        return "base_model.model.lm_head"
    return "base_model.model.model." + ".".join(modules)


def peft_tensors(model: CausalLM) -> dict[str, np.ndarray]:
    """Every attached adapter as PEFT-named float32 arrays."""
    tensors = {}
    for adapter in adapter_slices(model):
        prefix = _peft_prefix(adapter.path)
        tensors[prefix + ".lora_A.weight"] = np.ascontiguousarray(np.asarray(adapter.get("a"), np.float32).T)
        tensors[prefix + ".lora_B.weight"] = np.ascontiguousarray(np.asarray(adapter.get("b"), np.float32).T)
    if not tensors:
        raise ValueError("the model has no LoRA adapters to export")
    return tensors


def base_model_hub_id(base_model: str | os.PathLike[str] | None) -> str | None:
    """The Hub id PEFT users expect for the base model at local path `base_model`: the embedded
    or a converted opt-in model's, else the `_name_or_path` in the directory's config.json when it
    is a Hub id; otherwise the path as given (the only name we have)."""
    from soo_jax.models.embedded import embedded_hub_id
    from soo_jax.models.opt_in import opt_in_hub_id

    if base_model is None:
        return None
    if hub_id := embedded_hub_id(base_model) or opt_in_hub_id(base_model):
        return hub_id
    config_file = pathlib.Path(base_model) / "config.json"
    if config_file.is_file():
        name = json.loads(config_file.read_text()).get("_name_or_path") or ""
        if _HUB_ID.fullmatch(name) and not os.path.isabs(name):
            return name
    return str(base_model)


def peft_adapter_config(config: LoRAConfig, base_model: str | None) -> dict:
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": config.rank, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
        "target_modules": list(config.targets), "layers_to_transform": (
            list(config.layers) if config.layers is not None else None),
        "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
    }


def write_directory_atomically(out_dir: str | pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
    """Writes files into a hidden sibling of `out_dir`, then swaps it in: never a half-written
    dir. The directory gets the umask's mode like any other we write (not mkdtemp's 0700)."""
    out_dir = pathlib.Path(out_dir)
    with atomic_directory(out_dir, overwrite=True) as staging:
        for name, data in files.items():
            with open(staging / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    return out_dir


def export_peft_adapter(model: CausalLM, config: LoRAConfig, out_dir: str | pathlib.Path,
                        *, base_model: str | None = None) -> pathlib.Path:
    """Writes the PEFT adapter directory; `base_model` is the local path of the base model."""
    from safetensors.numpy import save

    files = {
        ADAPTER_WEIGHTS: save(peft_tensors(model), metadata={"format": "pt"}),
        ADAPTER_CONFIG: json.dumps(peft_adapter_config(config, base_model_hub_id(base_model)),
                                   indent=2).encode(),
        SOO_JAX_METADATA: json.dumps({"base_model_path": None if base_model is None else str(base_model)},
                                     indent=2).encode(),
    }
    return write_directory_atomically(out_dir, files)


def read_peft_config(adapter_dir: str | pathlib.Path) -> LoRAConfig:
    adapter_dir = pathlib.Path(adapter_dir)
    config_file = adapter_dir / ADAPTER_CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(f"no {ADAPTER_CONFIG} in {adapter_dir}: not a PEFT adapter directory")
    raw = read_json(config_file)  # names the file when it is not valid JSON
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"{config_file}: only LoRA adapters are supported, got peft_type={raw.get('peft_type')!r}")
    for flag in ("use_dora", "use_rslora", "fan_in_fan_out"):
        if raw.get(flag):
            raise ValueError(f"{config_file}: {flag}=true is not supported")
    if raw.get("rank_pattern") or raw.get("alpha_pattern"):
        raise ValueError(f"{config_file}: per-module rank/alpha patterns are not supported")
    targets = raw.get("target_modules")
    if not isinstance(targets, list):
        raise ValueError(f"{config_file}: target_modules must be a list of module names, got {targets!r}")
    layers = raw.get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    missing = [key for key in ("r", "lora_alpha") if key not in raw]
    if missing:
        raise ValueError(f"{config_file}: no {' or '.join(missing)}; not a complete PEFT LoRA config")
    try:  # LoRAConfig checks each value's type and range
        return LoRAConfig(rank=raw["r"], alpha=raw["lora_alpha"], dropout=raw.get("lora_dropout", 0.0),
                          targets=tuple(targets), layers=tuple(layers) if layers is not None else None)
    except ValueError as err:
        raise ValueError(f"{config_file}: {err}") from None


def load_peft_adapter(model: CausalLM, adapter_dir: str | pathlib.Path, *, rngs: nnx.Rngs | None = None) -> CausalLM:
    """Attaches the adapter in `adapter_dir` (PEFT format) to `model`, in place; returns the model."""
    adapter_dir = pathlib.Path(adapter_dir)
    config = read_peft_config(adapter_dir)
    weights = SafetensorsFile(adapter_dir / ADAPTER_WEIGHTS)
    # PEFT may save the adapter name inside the key ("lora_A.default.weight"); normalise it.
    names = {k.replace(".default.weight", ".weight"): k for k in weights.keys()}
    apply_lora(model, config, rngs=rngs or nnx.Rngs(0))
    used = set()
    for adapter in adapter_slices(model):
        prefix = _peft_prefix(adapter.path)
        for ours, suffix in (("a", ".lora_A.weight"), ("b", ".lora_B.weight")):
            name = prefix + suffix
            if name not in names:
                raise KeyError(f"adapter tensor {name!r} is missing from {adapter_dir / ADAPTER_WEIGHTS}")
            value = np.asarray(weights.get(names[name]), np.float32).T
            expected = tuple(adapter.get(ours).shape)
            if value.shape != expected:
                raise ValueError(f"adapter tensor {name!r} has shape {value.T.shape}, expected {expected[::-1]}")
            adapter.set(ours, value)
            used.add(names[name])
    unused = sorted(set(weights.keys()) - used)
    if unused:
        raise ValueError(f"{len(unused)} adapter tensor(s) match no adapted module of this model: {unused[:5]}")
    return model
