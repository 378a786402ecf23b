"""Import a GGUF checkpoint as a Hugging Face model directory.

`import_gguf("model.gguf", "out/")` writes what `transformers.AutoConfig`, `AutoTokenizer`,
`AutoModelForCausalLM` and the project's Flax loader read:

    config.json                     model_type / architectures / shapes, from the GGUF metadata
    model.safetensors               de-quantized weights, HF names, PyTorch (out, in) layout
      (or model-0000k-of-0000n.safetensors + model.safetensors.index.json when sharded)
    tokenizer.json, tokenizer_config.json (with the chat template)
    generation_config.json          bos / eos / pad ids

Supported GGUF architectures (`SUPPORTED_ARCHITECTURES`): llama (including Mistral, which
llama.cpp writes as llama), qwen2, gemma2: the families the Flax side ports. Every tensor type that gguf-py can de-quantize
is supported. The output directory appears atomically: it is assembled in a hidden
sibling directory and renamed into place, so a directory with the final name is always complete.

Runtime dependencies: numpy, gguf, safetensors, and transformers' tokenizer classes. Not torch:
importing transformers' config classes or its GGUF reader would pull torch in, so the config is
written as plain JSON and the GGUF metadata is read with gguf-py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import gguf
import ml_dtypes
import numpy as np
import safetensors.numpy

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_DTYPES",
    "GGUFImportError",
    "NotAGGUFFileError",
    "UnsupportedArchitectureError",
    "UnsupportedQuantizationError",
    "MalformedGGUFError",
    "import_gguf",
    "main",
]

# Bump whenever the files written for the same GGUF change, so that caches keyed on it
# (see `soo_jax.models.embedded`) re-convert instead of serving stale output.
FORMAT_VERSION = 1

SUPPORTED_DTYPES: Mapping[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}

DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3

_GGUF_MAGIC = b"GGUF"
_SAFETENSORS_SINGLE_FILE = "model.safetensors"
_SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"


class GGUFImportError(ValueError):
    """A GGUF file that cannot be imported; the message says why."""


class NotAGGUFFileError(GGUFImportError):
    pass


class UnsupportedArchitectureError(GGUFImportError):
    pass


class UnsupportedQuantizationError(GGUFImportError):
    pass


class MalformedGGUFError(GGUFImportError):
    pass


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

# GGUF names outside the decoder blocks -> HF names (without the .weight/.bias suffix).
_TOP_LEVEL_MODULES: Mapping[str, str] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

# GGUF `blk.N.<name>` -> HF `model.layers.N.<name>`, for llama-family decoder blocks.
_DECODER_BLOCK_MODULES: Mapping[str, str] = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_DECODER_BLOCK_REQUIRED = frozenset(f"{module}.weight" for module in _DECODER_BLOCK_MODULES)

# Gemma 2 norms around both sub-layers: llama.cpp's ffn_norm is HF's *pre*-feedforward norm there.
_GEMMA2_BLOCK_MODULES: Mapping[str, str] = {
    **_DECODER_BLOCK_MODULES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}

# Metadata and tensor shapes (PyTorch order) -> config keys specific to one architecture.
ExtraConfig = Callable[[Mapping[str, Any], Mapping[str, tuple[int, ...]]], dict[str, Any]]


@dataclass(frozen=True)
class ArchitectureSpec:
    """How one GGUF `general.architecture` maps onto a transformers model class."""

    gguf_architecture: str
    model_type: str
    hf_architecture: str
    block_modules: Mapping[str, str]
    required_block_tensors: frozenset[str]
    # llama.cpp's converter permutes q/k rows of llama-family models into its interleaved RoPE
    # layout; HF's rotate_half wants the two halves of each head contiguous again.
    permuted_qk: bool
    extra_config: ExtraConfig
    # llama.cpp stores Gemma's zero-centred RMSNorm weights w as w + 1; this is subtracted again.
    norm_weight_offset: float = 0.0


def _llama_config(metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    return {
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in shapes,
        "mlp_bias": "blk.0.ffn_up.bias" in shapes,
    }


def _qwen_config(metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    return {"hidden_act": "silu", "use_sliding_window": False}


def _gemma2_config(metadata: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    num_layers = int(_required(metadata, "gemma2.block_count"))
    hidden_size = int(_required(metadata, "gemma2.embedding_length"))
    num_heads = int(_required(metadata, "gemma2.attention.head_count"))
    head_dim = int(_required(metadata, "gemma2.attention.key_length"))
    # Not in the file: llama.cpp scales queries by 1/sqrt(hidden / heads) for the 46-layer 27B
    # model and by 1/sqrt(head_dim) otherwise, as the HF configs' query_pre_attn_scalar does.
    query_pre_attn_scalar = hidden_size // num_heads if num_layers == 46 else head_dim
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "sliding_window": int(_required(metadata, "gemma2.attention.sliding_window")),
        # llama.cpp runs even layers with the sliding window, odd ones with full attention.
        "layer_types": ["sliding_attention" if layer % 2 == 0 else "full_attention" for layer in range(num_layers)],
        # llama.cpp's defaults when the keys are absent, which are also Gemma 2's values.
        "attn_logit_softcapping": float(metadata.get("gemma2.attn_logit_softcapping", 50.0)),
        "final_logit_softcapping": float(metadata.get("gemma2.final_logit_softcapping", 30.0)),
    }


# llama.cpp writes Mistral (dense) checkpoints as architecture `llama` and runs them as llama, with
# no sliding window, so importing them as LlamaForCausalLM computes what llama.cpp computes.
_ARCHITECTURES: Mapping[str, ArchitectureSpec] = {
    "llama": ArchitectureSpec(
        gguf_architecture="llama",
        model_type="llama",
        hf_architecture="LlamaForCausalLM",
        block_modules=_DECODER_BLOCK_MODULES,
        required_block_tensors=_DECODER_BLOCK_REQUIRED,
        permuted_qk=True,
        extra_config=_llama_config,
    ),
    "qwen2": ArchitectureSpec(
        gguf_architecture="qwen2",
        model_type="qwen2",
        hf_architecture="Qwen2ForCausalLM",
        block_modules=_DECODER_BLOCK_MODULES,
        required_block_tensors=_DECODER_BLOCK_REQUIRED
        | {"attn_q.bias", "attn_k.bias", "attn_v.bias"},
        permuted_qk=False,
        extra_config=_qwen_config,
    ),
    "gemma2": ArchitectureSpec(
        gguf_architecture="gemma2",
        model_type="gemma2",
        hf_architecture="Gemma2ForCausalLM",
        block_modules=_GEMMA2_BLOCK_MODULES,
        required_block_tensors=frozenset(f"{module}.weight" for module in _GEMMA2_BLOCK_MODULES),
        permuted_qk=False,
        extra_config=_gemma2_config,
        norm_weight_offset=1.0,
    ),
}

SUPPORTED_ARCHITECTURES: tuple[str, ...] = tuple(sorted(_ARCHITECTURES))


def architecture_spec(gguf_architecture: str) -> ArchitectureSpec:
    try:
        return _ARCHITECTURES[gguf_architecture]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"GGUF architecture {gguf_architecture!r} is not supported by soo_jax's GGUF import; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}."
        ) from None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFContents:
    """A GGUF file's metadata and tensors; tensor data stays memory-mapped until de-quantized."""

    path: Path
    architecture: str
    metadata: Mapping[str, Any]
    tensors: Mapping[str, gguf.ReaderTensor]  # in file order


def read_gguf(gguf_path: str | os.PathLike[str]) -> GGUFContents:
    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with path.open("rb") as file:
        magic = file.read(len(_GGUF_MAGIC))
    if magic != _GGUF_MAGIC:
        raise NotAGGUFFileError(
            f"{path} is not a GGUF file: it starts with {magic!r}, not the GGUF magic {_GGUF_MAGIC!r}."
        )
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, struct.error) as error:
        raise MalformedGGUFError(f"{path} has a GGUF header but could not be parsed: {error}") from error
    metadata = {name: _field_value(field) for name, field in reader.fields.items()}
    architecture = metadata.get("general.architecture")
    if not isinstance(architecture, str):
        raise MalformedGGUFError(f"{path} has no general.architecture in its metadata.")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    return GGUFContents(path=path, architecture=architecture, metadata=metadata, tensors=tensors)


def _field_value(field: gguf.ReaderField) -> Any:
    value = field.contents()
    if field.types == [gguf.GGUFValueType.FLOAT32]:
        # float32 metadata such as rms eps 1e-5 reads back as 9.999999747378752e-06; its shortest
        # float32 spelling is the value the model's own config had.
        return float(str(np.float32(value)))
    return value


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def _required(metadata: Mapping[str, Any], key: str) -> Any:
    if key not in metadata:
        raise MalformedGGUFError(f"GGUF metadata lacks the required key {key!r}.")
    return metadata[key]


def _uniform_int(value: Any, key: str) -> int:
    # Some GGUFs give a per-layer list (e.g. head_count_kv); transformers' dense configs need one.
    if isinstance(value, list):
        if len(set(value)) != 1:
            raise UnsupportedArchitectureError(f"GGUF key {key!r} varies per layer ({value}); not supported.")
        value = value[0]
    return int(value)


def _rope_parameters(metadata: Mapping[str, Any], arch: str, tensor_names: Sequence[str]) -> dict[str, Any]:
    rope_theta = float(metadata.get(f"{arch}.rope.freq_base", 10000.0))
    if "rope_freqs.weight" in tensor_names:
        raise UnsupportedArchitectureError(
            "GGUF stores per-frequency RoPE factors (rope_freqs.weight, Llama-3.1-style rope scaling); "
            "soo_jax's GGUF import does not reconstruct that scaling."
        )
    scaling_type = metadata.get(f"{arch}.rope.scaling.type", "none")
    if scaling_type == "none":
        return {"rope_type": "default", "rope_theta": rope_theta}
    if scaling_type == "linear":
        factor = float(_required(metadata, f"{arch}.rope.scaling.factor"))
        return {"rope_type": "linear", "factor": factor, "rope_theta": rope_theta}
    raise UnsupportedArchitectureError(f"GGUF RoPE scaling type {scaling_type!r} is not supported.")


def hf_config(
    spec: ArchitectureSpec,
    metadata: Mapping[str, Any],
    tensor_shapes: Mapping[str, tuple[int, ...]],
    dtype: str,
) -> dict[str, Any]:
    """The config.json dict for a decoder-only GGUF; `tensor_shapes` are in PyTorch order."""
    arch = spec.gguf_architecture
    key = lambda name: _required(metadata, f"{arch}.{name}")  # noqa: E731
    hidden_size = int(key("embedding_length"))
    num_heads = _uniform_int(key("attention.head_count"), f"{arch}.attention.head_count")
    num_kv_heads = _uniform_int(
        metadata.get(f"{arch}.attention.head_count_kv", num_heads), f"{arch}.attention.head_count_kv"
    )
    head_dim = int(metadata.get(f"{arch}.attention.key_length", hidden_size // num_heads))
    rotary_dims = int(metadata.get(f"{arch}.rope.dimension_count", head_dim))
    if rotary_dims != head_dim:
        raise UnsupportedArchitectureError(
            f"GGUF rotates {rotary_dims} of {head_dim} head dimensions (partial RoPE); not supported."
        )
    if "token_embd.weight" not in tensor_shapes:
        raise MalformedGGUFError("GGUF has no token_embd.weight tensor.")
    # The embedding's row count is the vocabulary the weights were trained with; metadata
    # vocab_size is optional and the token list may be padded differently.
    vocab_size = tensor_shapes["token_embd.weight"][0]
    config: dict[str, Any] = {
        "architectures": [spec.hf_architecture],
        "model_type": spec.model_type,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": int(key("context_length")),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "rope_parameters": _rope_parameters(metadata, arch, tuple(tensor_shapes)),
        "tie_word_embeddings": "output.weight" not in tensor_shapes,
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
        "dtype": dtype,
    }
    return config | spec.extra_config(metadata, tensor_shapes)


# --------------------------------------------------------------------------------------------
# Tensors
# --------------------------------------------------------------------------------------------

_BLOCK_TENSOR_NAME = re.compile(r"blk\.(?P<layer>\d+)\.(?P<module>[a-z0-9_]+)\.(?P<kind>weight|bias)")
_TOP_LEVEL_TENSOR_NAME = re.compile(r"(?P<module>[a-z0-9_]+)\.(?P<kind>weight|bias)")


def hf_tensor_name(gguf_name: str, spec: ArchitectureSpec) -> str:
    if match := _BLOCK_TENSOR_NAME.fullmatch(gguf_name):
        module = spec.block_modules.get(match["module"])
        if module is not None:
            return f"model.layers.{match['layer']}.{module}.{match['kind']}"
    elif match := _TOP_LEVEL_TENSOR_NAME.fullmatch(gguf_name):
        module = _TOP_LEVEL_MODULES.get(match["module"])
        if module is not None:
            return f"{module}.{match['kind']}"
    raise UnsupportedArchitectureError(
        f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart for architecture "
        f"{spec.gguf_architecture!r}; refusing to drop it silently."
    )


def unpermute_rope_rows(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (rows of each head interleaved for its RoPE).

    Inverse of llama.cpp's `permute`: reshape(n_head, 2, rows // n_head // 2, ...).swapaxes(1, 2).
    Works on (rows, cols) weights and (rows,) biases; `num_heads` is the KV head count for k.
    """
    rows = weight.shape[0]
    if rows % (2 * num_heads):
        raise MalformedGGUFError(f"cannot split {rows} q/k rows into {num_heads} heads of even size")
    return (
        weight.reshape(num_heads, rows // num_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _torch_order_shape(tensor: gguf.ReaderTensor) -> tuple[int, ...]:
    # ggml lists dimensions fastest-moving first; PyTorch the other way round.
    return tuple(int(dim) for dim in reversed(tensor.shape.tolist()))


@cache
def _can_dequantize(qtype: gguf.GGMLQuantizationType) -> bool:
    _, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, block_bytes), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def check_quantization_types(tensors: Mapping[str, gguf.ReaderTensor]) -> None:
    unsupported = {
        name: tensor.tensor_type.name for name, tensor in tensors.items() if not _can_dequantize(tensor.tensor_type)
    }
    if unsupported:
        listing = ", ".join(f"{name} ({qtype})" for name, qtype in sorted(unsupported.items()))
        raise UnsupportedQuantizationError(
            f"GGUF holds tensor types that gguf-py cannot de-quantize: {listing}."
        )


def check_required_tensors(spec: ArchitectureSpec, tensor_names: Sequence[str], num_layers: int) -> None:
    present = set(tensor_names)
    required = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{layer}.{name}" for layer in range(num_layers) for name in spec.required_block_tensors
    }
    missing = sorted(required - present)
    if missing:
        shown = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
        raise MalformedGGUFError(f"GGUF lacks tensors a {spec.hf_architecture} needs: {shown}.")


def dequantized_tensor(
    tensor: gguf.ReaderTensor, spec: ArchitectureSpec, num_heads: int, num_kv_heads: int, dtype: np.dtype
) -> np.ndarray:
    """One GGUF tensor as an HF weight: de-quantized, q/k un-permuted if needed, cast to `dtype`."""
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    values = np.asarray(values, dtype=np.float32).reshape(_torch_order_shape(tensor))
    if spec.norm_weight_offset and tensor.name.endswith("norm.weight"):
        values = values - np.float32(spec.norm_weight_offset)
    if spec.permuted_qk:
        if ".attn_q." in tensor.name:
            values = unpermute_rope_rows(values, num_heads)
        elif ".attn_k." in tensor.name:
            values = unpermute_rope_rows(values, num_kv_heads)
    return np.ascontiguousarray(values.astype(dtype, copy=False))


def plan_shards(tensor_bytes: Sequence[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Group tensors, in order, into shards of at most `max_shard_bytes` (a larger tensor gets its own)."""
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    shards: list[list[str]] = []
    shard_bytes = 0
    for name, nbytes in tensor_bytes:
        if not shards or shard_bytes + nbytes > max_shard_bytes:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(name)
        shard_bytes += nbytes
    return shards


def shard_file_names(num_shards: int) -> list[str]:
    if num_shards == 1:
        return [_SAFETENSORS_SINGLE_FILE]
    return [f"model-{index:05d}-of-{num_shards:05d}.safetensors" for index in range(1, num_shards + 1)]


def write_weights(
    contents: GGUFContents,
    spec: ArchitectureSpec,
    config: Mapping[str, Any],
    out_dir: Path,
    dtype: np.dtype,
    max_shard_bytes: int,
) -> list[str]:
    """Write the safetensors shard(s), holding at most one shard's tensors in memory at a time."""
    tensors = contents.tensors
    hf_names = {gguf_name: hf_tensor_name(gguf_name, spec) for gguf_name in tensors}
    sizes = [(name, int(np.prod(_torch_order_shape(t))) * dtype.itemsize) for name, t in tensors.items()]
    shards = plan_shards(sizes, max_shard_bytes)
    file_names = shard_file_names(len(shards))
    weight_map: dict[str, str] = {}
    for shard, file_name in zip(shards, file_names, strict=True):
        arrays = {
            hf_names[name]: dequantized_tensor(
                tensors[name], spec, config["num_attention_heads"], config["num_key_value_heads"], dtype
            )
            for name in shard
        }
        safetensors.numpy.save_file(arrays, out_dir / file_name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(arrays, file_name))
        del arrays
    if len(file_names) > 1:
        index = {
            "metadata": {"total_size": sum(nbytes for _, nbytes in sizes)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        _write_json(out_dir / _SAFETENSORS_INDEX_FILE, index)
    return file_names


# --------------------------------------------------------------------------------------------
# Tokenizer and generation config
# --------------------------------------------------------------------------------------------

# GGUF tokenizer.ggml.* id keys -> the tokenizer_config special-token names.
_SPECIAL_TOKEN_IDS: Mapping[str, str] = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def gguf_tokenizer_parts(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(tokenizer_dict, tokenizer_config)` as transformers' `get_gguf_tokenizer` builds them.

    Mirrors transformers.integrations.gguf.gguf_tokenizer_mapping.get_gguf_tokenizer, which we
    cannot call: its metadata reader imports torch.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_TOKENIZER_MAPPING

    grouped = {
        group: {name: metadata[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in metadata}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer_dict, tokenizer_config = grouped["tokenizer"], grouped["tokenizer_config"]
    tokenizer_type = tokenizer_dict.get("tokenizer_type")
    if tokenizer_type == "llama":
        # llama.cpp adds BOS to a sentencepiece vocabulary unless the file says otherwise.
        tokenizer_config.setdefault("add_bos_token", True)
    tokens = tokenizer_dict["tokens"]
    for name, id_key in _SPECIAL_TOKEN_IDS.items():
        token_id = metadata.get(id_key)
        tokenizer_config[name] = tokens[token_id] if token_id is not None else None
    return tokenizer_dict, tokenizer_config


def has_tokenizer(metadata: Mapping[str, Any]) -> bool:
    return "tokenizer.ggml.model" in metadata and "tokenizer.ggml.tokens" in metadata


def write_tokenizer(contents: GGUFContents, out_dir: Path) -> None:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tokenizer_dict, tokenizer_config = gguf_tokenizer_parts(contents.metadata)
    backend, extra_kwargs = convert_gguf_tokenizer(contents.architecture, tokenizer_dict)
    tokenizer = TokenizersBackend(tokenizer_object=backend, **tokenizer_config, **extra_kwargs)
    # save_jinja_files=False keeps the chat template inside tokenizer_config.json, where both
    # older and newer transformers (and plain-JSON readers) find it.
    tokenizer.save_pretrained(out_dir, save_jinja_files=False)


def generation_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    ids = {
        "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
    }
    return {name: value for name, value in ids.items() if value is not None}


# --------------------------------------------------------------------------------------------
# Directory handling
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _is_nonempty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


@contextmanager
def atomic_directory(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling of `out_dir` to fill, then rename it to `out_dir`.

    On error the partial directory is removed and `out_dir` is untouched. Raises
    FileExistsError if `out_dir` is non-empty (or becomes so meanwhile) and not `overwrite`.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if _is_nonempty_dir(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    partial = out_dir.parent / f".{out_dir.name}.partial-{token}"
    partial.mkdir()  # respects the umask, unlike tempfile.mkdtemp's 0o700
    try:
        yield partial
        _publish(partial, out_dir, overwrite=overwrite, token=token)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _publish(partial: Path, out_dir: Path, *, overwrite: bool, token: str) -> None:
    retired = None
    if overwrite and out_dir.exists():
        retired = out_dir.parent / f".{out_dir.name}.old-{token}"
        os.rename(out_dir, retired)
    try:
        # rename(2) replaces an empty directory and fails on a non-empty one, so a concurrent
        # writer that finished first keeps its result.
        os.rename(partial, out_dir)
    except OSError as error:
        if retired is not None:
            os.rename(retired, out_dir)
        if _is_nonempty_dir(out_dir):
            raise FileExistsError(f"{out_dir} was created by someone else while importing") from error
        raise
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def import_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Convert `gguf_path` into a Hugging Face model directory at `out_dir`; return `out_dir`.

    Raises FileNotFoundError (no such file), NotAGGUFFileError, UnsupportedArchitectureError,
    UnsupportedQuantizationError, MalformedGGUFError, or FileExistsError (non-empty `out_dir`
    without `overwrite`), each before anything is written.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(SUPPORTED_DTYPES)}; got {dtype!r}")
    out_dir = Path(out_dir)
    contents = read_gguf(gguf_path)
    spec = architecture_spec(contents.architecture)
    tensors = contents.tensors
    check_quantization_types(tensors)
    shapes = {name: _torch_order_shape(tensor) for name, tensor in tensors.items()}
    config = hf_config(spec, contents.metadata, shapes, dtype)
    check_required_tensors(spec, tuple(tensors), config["num_hidden_layers"])
    for name in tensors:
        hf_tensor_name(name, spec)  # fail on an unmapped tensor before writing anything

    with atomic_directory(out_dir, overwrite=overwrite) as staging:
        _write_json(staging / "config.json", config)
        _write_json(staging / "generation_config.json", generation_config(contents.metadata))
        for file_name in write_weights(contents, spec, config, staging, SUPPORTED_DTYPES[dtype], max_shard_bytes):
            # safetensors creates files owner-only; give them the umask-derived mode of our JSON.
            os.chmod(staging / file_name, (staging / "config.json").stat().st_mode)
        if has_tokenizer(contents.metadata):
            write_tokenizer(contents, staging)
        else:
            print(f"soo_jax: {contents.path} has no tokenizer metadata; no tokenizer files written", file=sys.stderr)
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soo_jax.models.gguf_import",
        description="Convert a GGUF checkpoint into a Hugging Face model directory.",
    )
    parser.add_argument("gguf_path", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dtype", choices=tuple(SUPPORTED_DTYPES), default="float32")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    args = parser.parse_args(argv)
    try:
        out_dir = import_gguf(args.gguf_path, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
    except (GGUFImportError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
