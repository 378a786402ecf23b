"""Model configuration: one frozen dataclass for every supported decoder family.

Built from a Hugging Face `config.json` (through `transformers.AutoConfig`), so a checkpoint
directory is the single source of truth for shapes and numerics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np

Family = Literal["llama", "gemma2"]

# HF `model_type` -> our family. Llama, Mistral and Qwen2 share one block layout and differ
# only in flags (biases, sliding window, tied head), so they share one implementation.
MODEL_TYPE_TO_FAMILY: dict[str, Family] = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "gemma2": "gemma2",
}

SUPPORTED_ACTIVATIONS = ("silu", "gelu_pytorch_tanh")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs; hashable so it can be a static jit argument."""

    family: Family
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    hidden_act: str = "silu"
    # Rope scaling as a sorted tuple of (key, value) pairs (hashable); empty for plain RoPE.
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    # Per-layer attention window (None = global attention). Length num_layers.
    sliding_windows: tuple[int | None, ...] = ()
    # Gemma-2 specifics.
    query_pre_attn_scalar: float | None = None
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None

    def __post_init__(self):
        problems = []
        if self.family not in ("llama", "gemma2"):
            problems.append(f"unknown family {self.family!r}")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_kv_heads > 0 and self.num_heads % self.num_kv_heads:
            problems.append(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            problems.append(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            problems.append(f"unsupported activation {self.hidden_act!r} (supported: {SUPPORTED_ACTIVATIONS})")
        if self.sliding_windows and len(self.sliding_windows) != self.num_layers:
            problems.append(
                f"sliding_windows has {len(self.sliding_windows)} entries for {self.num_layers} layers")
        rope_type = dict(self.rope_scaling).get("rope_type", "default")
        if rope_type not in SUPPORTED_ROPE_TYPES:
            problems.append(f"unsupported rope_type {rope_type!r} (supported: {SUPPORTED_ROPE_TYPES})")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))
        if not self.sliding_windows:
            object.__setattr__(self, "sliding_windows", (None,) * self.num_layers)

    @property
    def query_scale(self) -> float:
        # Gemma-2-27B scales queries by query_pre_attn_scalar**-0.5 (144), not head_dim**-0.5.
        if self.query_pre_attn_scalar is not None:
            return float(self.query_pre_attn_scalar) ** -0.5
        return self.head_dim ** -0.5

    @property
    def rope(self) -> dict[str, Any]:
        return dict(self.rope_scaling)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


def _as_tuple_of_ints(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),)


def _rope_parameters(hf_config) -> tuple[float, tuple[tuple[str, Any], ...]]:
    """Reads RoPE settings from both the transformers-5 (`rope_parameters`) and older layouts."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    theta = float(params.pop("rope_theta", getattr(hf_config, "rope_theta", 10000.0)))
    params.setdefault("rope_type", "default")
    if params["rope_type"] == "default":
        params = {"rope_type": "default"}
    return theta, tuple(sorted(params.items()))


def _sliding_windows(hf_config, model_type: str, num_layers: int) -> tuple[int | None, ...]:
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if model_type == "qwen2" and not getattr(hf_config, "use_sliding_window", False):
        window = None
    if window is None:
        return (None,) * num_layers
    if layer_types is not None:
        if len(layer_types) != num_layers:
            raise ValueError(f"config.layer_types has {len(layer_types)} entries for {num_layers} layers")
        return tuple(int(window) if t == "sliding_attention" else None for t in layer_types)
    # Mistral applies its window on every layer when one is configured.
    return (int(window),) * num_layers


def from_hf_config(hf_config) -> ModelConfig:
    """Converts a `transformers.PretrainedConfig` to our ModelConfig, rejecting what we can't run."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in MODEL_TYPE_TO_FAMILY:
        raise ValueError(
            f"unsupported architecture: model_type={model_type!r} "
            f"(architectures={getattr(hf_config, 'architectures', None)}); "
            f"supported model types: {sorted(MODEL_TYPE_TO_FAMILY)}")
    family = MODEL_TYPE_TO_FAMILY[model_type]
    num_layers = int(hf_config.num_hidden_layers)
    num_heads = int(hf_config.num_attention_heads)
    hidden = int(hf_config.hidden_size)
    head_dim = getattr(hf_config, "head_dim", None) or hidden // num_heads
    theta, rope_scaling = _rope_parameters(hf_config)
    if family == "gemma2":
        hidden_act = getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act
    else:
        hidden_act = hf_config.hidden_act
    attention_bias = bool(getattr(hf_config, "attention_bias", False))
    qkv_bias = True if model_type == "qwen2" else attention_bias
    o_bias = False if model_type == "qwen2" else attention_bias
    eos = _as_tuple_of_ints(getattr(hf_config, "eos_token_id", None))
    return ModelConfig(
        family=family,
        model_type=model_type,
        vocab_size=int(hf_config.vocab_size),
        hidden_size=hidden,
        intermediate_size=int(hf_config.intermediate_size),
        num_layers=num_layers,
        num_heads=num_heads,
        num_kv_heads=int(getattr(hf_config, "num_key_value_heads", None) or num_heads),
        head_dim=int(head_dim),
        rms_norm_eps=float(hf_config.rms_norm_eps),
        rope_theta=theta,
        hidden_act=hidden_act,
        rope_scaling=rope_scaling,
        max_position_embeddings=int(getattr(hf_config, "max_position_embeddings", 4096)),
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        o_bias=o_bias,
        mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
        sliding_windows=_sliding_windows(hf_config, model_type, num_layers),
        query_pre_attn_scalar=getattr(hf_config, "query_pre_attn_scalar", None) if family == "gemma2" else None,
        attn_logit_softcap=getattr(hf_config, "attn_logit_softcapping", None) if family == "gemma2" else None,
        final_logit_softcap=getattr(hf_config, "final_logit_softcapping", None) if family == "gemma2" else None,
        bos_token_id=getattr(hf_config, "bos_token_id", None),
        eos_token_ids=eos,
        pad_token_id=getattr(hf_config, "pad_token_id", None),
    )


def rope_inverse_frequencies(config: ModelConfig) -> tuple[np.ndarray, float]:
    """RoPE inverse frequencies (float32, [head_dim // 2]) and the cos/sin scaling factor.

    Mirrors transformers' ROPE_INIT_FUNCTIONS for the supported rope types, in float32 as they
    compute them, so positions encode identically.
    """
    dim = config.head_dim
    base = config.rope_theta
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / (np.float32(base) ** exponents)).astype(np.float32)
    params = config.rope
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        return inv_freq, 1.0
    if rope_type == "linear":
        return (inv_freq / np.float32(params["factor"])).astype(np.float32), 1.0
    if rope_type == "llama3":
        factor = params["factor"]
        low_ff, high_ff = params["low_freq_factor"], params["high_freq_factor"]
        old_len = params["original_max_position_embeddings"]
        low_wavelen, high_wavelen = old_len / low_ff, old_len / high_ff
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32), 1.0
    if rope_type == "yarn":
        return _yarn(config, params, dim, base)
    raise ValueError(f"unsupported rope_type {rope_type!r}")


def _yarn(config: ModelConfig, params: dict, dim: int, base: float) -> tuple[np.ndarray, float]:
    factor = params.get("factor")
    original = params["original_max_position_embeddings"]
    if factor is None:
        factor = config.max_position_embeddings / original

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        if params.get("mscale") and params.get("mscale_all_dim"):
            attention_factor = mscale(factor, params["mscale"]) / mscale(factor, params["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations):
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight
    return inv_freq.astype(np.float32), float(attention_factor)
