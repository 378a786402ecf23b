"""Loading Hugging Face checkpoints into our Flax ports.

`from_pretrained(path)` reads `config.json` through transformers' AutoConfig, builds the model
abstractly (no memory), then streams the safetensors tensor by tensor: each one is read from a
memory map, transposed to our layout, cast, and placed on its sharding before the next is read.
The decoder layers' parameters are stacked [L, ...]: each layer's checkpoint tensor is written
into its slice of the stacked array on the devices (in place), so the host holds one layer's
tensor at a time. Our parameter paths mirror transformers' module names (with the layer index
after 'layers'), so the key map is a rule, not a table.
"""

from __future__ import annotations

import functools
import json
import logging
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from soo_jax.models import build_model
from soo_jax.models.config import ModelConfig, from_hf_config
from soo_jax.models.layers import is_stacked
from soo_jax.models.safetensors_io import SafetensorsFile
from soo_jax.models.transformer import CausalLM
from soo_jax.sharding import DEFAULT_RULES, Rules, state_shardings

# Checkpoint entries that carry no parameters of ours.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _drop_no_torch_advice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("PyTorch was not found.")


# We use transformers only for configs and tokenizers, so without torch (the runtime install)
# its import-time "PyTorch was not found. Models won't be available ..." is noise that reads
# like an error. It is logged on the library's root logger, whose filters survive transformers'
# own logging set-up; installed here, before any of our code imports transformers.
if _drop_no_torch_advice not in logging.getLogger("transformers").filters:
    logging.getLogger("transformers").addFilter(_drop_no_torch_advice)


def as_dtype(dtype: Any):
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    return jnp.dtype(dtype).type if dtype is not None else None


def hf_parameter_name(path: tuple) -> tuple[str, bool]:
    """Our state path, with a layer index for the stacked layers, -> (transformers tensor name,
    whether the tensor is transposed).

    ('layers', 3, 'self_attn', 'q_proj', 'kernel') -> ('model.layers.3.self_attn.q_proj.weight', True)
    """
    *modules, leaf = (str(p) for p in path)
    prefix = "lm_head" if modules == ["lm_head"] else "model." + ".".join(modules)
    if leaf == "kernel":
        return prefix + ".weight", True
    if leaf in ("scale", "embedding"):
        return prefix + ".weight", False
    if leaf == "bias":
        return prefix + ".bias", False
    raise ValueError(f"no transformers name for parameter {'/'.join(map(str, path))}")


def load_config(path: str | pathlib.Path) -> ModelConfig:
    from transformers import AutoConfig

    path = pathlib.Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {path}: not a Hugging Face model directory")
    try:  # a damaged or foreign config.json: one line naming the file, not transformers' traceback
        config = from_hf_config(AutoConfig.from_pretrained(str(path)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a usable model config ({' '.join(str(err).split())[:300]}); "
                         f"repair it, or download or convert the model again") from err
    # Chat models often end a turn with a token listed only in generation_config.json
    # (Gemma-2-it: <end_of_turn>); generation must stop there too.
    generation_file = path / "generation_config.json"
    if generation_file.is_file():
        from soo_jax.run_dir import read_json

        eos = read_json(generation_file).get("eos_token_id")
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        config = config.replace(eos_token_ids=tuple(sorted(set(config.eos_token_ids) | set(eos))))
    return config


class CheckpointIndex:
    """Which file holds which tensor, for single-file and sharded (index.json) checkpoints."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        index_file = path / "model.safetensors.index.json"
        if index_file.is_file():
            weight_map = json.loads(index_file.read_text())["weight_map"]
            missing = sorted({f for f in weight_map.values() if not (path / f).is_file()})
            if missing:
                raise FileNotFoundError(
                    f"checkpoint shard(s) listed in {index_file.name} are missing from {path}: {', '.join(missing)}")
            self.file_of = dict(weight_map)
        else:
            files = sorted(path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no *.safetensors weights in {path}")
            self.file_of = {}
            for f in files:
                for key in SafetensorsFile(f).keys():
                    self.file_of[key] = f.name
        self._open: dict[str, SafetensorsFile] = {}
        # Checkpoints saved from the bare decoder (no LM head) have no "model." prefix.
        self.bare = not any(k.startswith("model.") for k in self.file_of)

    def resolve(self, name: str) -> str | None:
        if self.bare and name.startswith("model."):
            name = name[len("model."):]
        return name if name in self.file_of else None

    def read(self, name: str) -> np.ndarray:
        file_name = self.file_of[name]
        if file_name not in self._open:
            self._open[file_name] = SafetensorsFile(self.path / file_name)
        return self._open[file_name].get(name)


def from_pretrained(path: str | pathlib.Path, *, dtype: Any = "float32", param_dtype: Any = None,
                    mesh: jax.sharding.Mesh | None = None, rules: Rules = DEFAULT_RULES,
                    progress: bool = False, scan_layers: bool = True, remat: str = "none") -> CausalLM:
    """Loads a Hugging Face model directory (or a GGUF file) into our Flax port.

    dtype: compute dtype; param_dtype: storage dtype (defaults to dtype). With a mesh, every
    parameter is placed on the sharding its logical axes map to under `rules`. `scan_layers`,
    `remat`: how the layer loop runs (soo_jax.models.transformer; no effect on the numbers).
    """
    path = resolve_model_path(path)
    config = load_config(path)
    dtype = as_dtype(dtype)
    param_dtype = as_dtype(param_dtype) or dtype
    abstract = nnx.eval_shape(lambda: build_model(config, dtype=dtype, param_dtype=param_dtype,
                                                  rngs=nnx.Rngs(0), scan_layers=scan_layers, remat=remat))
    graphdef, abstract_state = nnx.split(abstract)
    shardings = state_shardings(abstract_state, mesh, rules) if mesh is not None else None
    index = CheckpointIndex(path)

    flat = nnx.to_flat_state(abstract_state)
    flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
    used: set[str] = set()

    def read(state_path: tuple, expected_shape: tuple) -> np.ndarray:
        """The checkpoint tensor for `state_path` in our layout (a memory-mapped view)."""
        name, transposed = hf_parameter_name(state_path)
        key = index.resolve(name)
        if key is None:
            raise KeyError(f"tensor {name!r} (for {'/'.join(map(str, state_path))}) is missing from the "
                           f"checkpoint in {path}")
        host = index.read(key)
        if transposed:
            host = host.T
        if tuple(host.shape) != tuple(expected_shape):
            raise ValueError(f"tensor {name!r} has shape {tuple(host.shape)} in the checkpoint but the model "
                             f"config expects {tuple(expected_shape)} (after transposing: {transposed})")
        used.add(key)
        return host

    loaded = []
    for state_path, variable in tqdm(flat, desc="loading weights", unit="tensor", disable=not progress,
                                     file=sys.stderr, leave=False):
        sharding = flat_shardings.get(state_path)
        if is_stacked(variable):
            layer_path = lambda i, p=state_path: (p[0], i, *p[1:])  # noqa: E731
            value = _stacked_on_devices([lambda i=i: read(layer_path(i), variable.shape[1:])
                                         for i in range(variable.shape[0])], variable, sharding)
        else:
            value = _on_devices(read(state_path, variable.shape), variable.dtype, sharding)
        loaded.append((state_path, variable.replace(value)))
    _check_unused(index, used, config, path)
    state = nnx.from_flat_state(loaded)
    return nnx.merge(graphdef, state)


def _on_devices(host: np.ndarray, dtype, sharding) -> jax.Array:
    if sharding is None:
        return jnp.asarray(np.asarray(host, dtype=dtype))
    # Each process reads and converts only the slices its own devices hold (the memory map reads
    # only those bytes); device_put would gather whole tensors across hosts.
    return jax.make_array_from_callback(
        host.shape, sharding, lambda index: np.asarray(host[index], dtype))


def _stacked_on_devices(layers: list, variable, sharding) -> jax.Array:
    """A stacked parameter [L, ...] filled one layer at a time: `layers[i]()` reads layer i's
    tensor. Without a mesh the layers are copied into one host buffer of this parameter (one
    parameter's size, never the model's) and that goes to the device. With one, each layer goes
    to the devices on the stacked sharding minus its layer axis and into slice i of the stacked
    array in place (donated) before layer i + 1 is read, so a host holds one layer's slices."""
    shape, dtype = tuple(variable.shape), variable.dtype
    if sharding is None:
        host = np.empty(shape, dtype)
        for i, read_layer in enumerate(layers):
            host[i] = read_layer()
        return jnp.asarray(host)
    layer_sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
    stack = jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)()
    for i, read_layer in enumerate(layers):
        stack = _write_layer(stack, _on_devices(read_layer(), dtype, layer_sharding), jnp.int32(i))
    return stack


@functools.partial(jax.jit, donate_argnums=(0,))
def _write_layer(stack: jax.Array, layer: jax.Array, i: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(stack, layer.astype(stack.dtype), i, 0)


def _check_unused(index: CheckpointIndex, used: set[str], config: ModelConfig, path) -> None:
    unused = [k for k in index.file_of if k not in used and not k.endswith(_IGNORED_SUFFIXES)]
    if config.tie_word_embeddings:
        unused = [k for k in unused if k != "lm_head.weight"]
    if unused:
        shown = ", ".join(sorted(unused)[:5]) + (" ..." if len(unused) > 5 else "")
        raise ValueError(f"{len(unused)} checkpoint tensor(s) in {path} do not belong to a "
                         f"{config.model_type} model of this config: {shown}")


def resolve_model_path(path: str | pathlib.Path) -> pathlib.Path:
    """A model directory for `path`: a directory as is; a .gguf file imported (and cached) first;
    "embedded" is the default model, SmolLM2-135M-Instruct; a registered opt-in model's name
    (soo_jax.models.opt_in) is that model, verified and converted on first use."""
    if str(path) == "embedded":
        from soo_jax.models.embedded import default_model_dir

        return default_model_dir()
    from soo_jax.models.opt_in import OPT_IN_MODELS, opt_in_model_dir

    if str(path) in OPT_IN_MODELS:
        return opt_in_model_dir(str(path))
    path = pathlib.Path(path).expanduser()
    if path.suffix == ".gguf":
        from soo_jax.models.embedded import cached_gguf_import

        return cached_gguf_import(path)
    if not path.exists():
        raise FileNotFoundError(f"model path not found: {path}; give a Hugging Face model directory, a .gguf "
                                f"file, or 'embedded'")
    if not path.is_dir():
        raise ValueError(f"{path} is neither a model directory nor a .gguf file; give one of those, or 'embedded'")
    return path


def load_tokenizer(path: str | pathlib.Path):
    """The tokenizer (with its chat template) from the same path, padding on the left."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model_path(path)))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
