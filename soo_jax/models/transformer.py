"""The decoder-only skeleton every family shares: embed -> blocks -> final norm -> logits.

A family file (llama.py, gemma2.py) supplies its decoder block and the two places where the
families differ outside the block (embedding scale, final-logit soft-cap); masks, RoPE tables,
the KV cache and activation capture live here once.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx, struct

from soo_jax.models.config import ModelConfig, rope_inverse_frequencies
from soo_jax.sharding import constrain
from soo_jax.models.layers import LAYER_SITES, Embedding, Linear, RMSNorm, make_attention_mask, rope_cos_sin

Array = jax.Array
LogitsMode = Literal["all", "last", "none"]

MODEL_SITES = ("logits",)
ACTIVATION_AXES = ("batch", "length", None)


@dataclasses.dataclass(frozen=True)
class Capture:
    """Which activations to sow: sites (see layers.LAYER_SITES, plus "logits") at which layers.

    Only requested sites are kept, so asking for one layer's o_proj of a 78B model holds one
    [B, T, D] array, not every layer's activations.
    """

    sites: tuple[str, ...] = ("o_proj",)
    layers: tuple[int, ...] | None = None  # None: every layer

    def __post_init__(self):
        unknown = set(self.sites) - set(LAYER_SITES) - set(MODEL_SITES)
        if unknown:
            raise ValueError(f"unknown activation sites {sorted(unknown)}; "
                             f"known: {list(LAYER_SITES) + list(MODEL_SITES)}")
        object.__setattr__(self, "sites", tuple(self.sites))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))

    def sites_at(self, layer: int) -> frozenset[str]:
        if self.layers is not None and layer not in self.layers:
            return frozenset()
        return frozenset(self.sites) & frozenset(LAYER_SITES)

    def deepest_layer(self, num_layers: int) -> int:
        if not frozenset(self.sites) & frozenset(LAYER_SITES):
            return num_layers - 1
        return num_layers - 1 if self.layers is None else max(self.layers)


@struct.dataclass
class KVCache:
    """Keys/values per layer [B, S, K, E], which slots hold real tokens, and the next free slot."""

    keys: tuple[Array, ...]
    values: tuple[Array, ...]
    key_valid: Array  # bool [B, S]
    index: Array  # int32 scalar

    @property
    def max_length(self) -> int:
        return self.key_valid.shape[1]


def init_cache(config: ModelConfig, batch: int, max_length: int, dtype=jnp.float32) -> KVCache:
    shape = (batch, max_length, config.num_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(keys=zeros, values=tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers)),
                   key_valid=jnp.zeros((batch, max_length), bool), index=jnp.zeros((), jnp.int32))


def extend_cache(cache: KVCache, extra_slots: int) -> KVCache:
    """The cache with `extra_slots` empty slots appended after its last one."""
    def pad(x):
        return jnp.pad(x, [(0, 0), (0, extra_slots)] + [(0, 0)] * (x.ndim - 2))
    return cache.replace(keys=tuple(map(pad, cache.keys)), values=tuple(map(pad, cache.values)),
                         key_valid=pad(cache.key_valid))


def positions_from_mask(attention_mask: Array) -> Array:
    """Left-padded rows count positions from their first real token, as unpadded rows do."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class CausalLM(nnx.Module):
    """Decoder-only language model. Subclasses set `block_class` and `norm_unit_offset`."""

    block_class: type[nnx.Module]
    norm_unit_offset: bool = False

    def __init__(self, config: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype, self.param_dtype = dtype, param_dtype
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([
            self.block_class(config, i, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
            for i in range(config.num_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, unit_offset=self.norm_unit_offset,
                            param_dtype=param_dtype)
        self.lm_head = None if config.tie_word_embeddings else Linear(
            config.hidden_size, config.vocab_size, use_bias=False, axes=("embed", "vocab"), site="lm_head",
            dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    # Family hooks ------------------------------------------------------------------------
    def embed(self, tokens: Array) -> Array:
        return self.embed_tokens(tokens)

    def final_logits(self, logits: Array) -> Array:
        return logits

    # Forward -----------------------------------------------------------------------------
    def __call__(self, tokens: Array, attention_mask: Array | None = None, positions: Array | None = None, *,
                 cache: KVCache | None = None, capture: Capture | None = None,
                 logits: LogitsMode = "all") -> tuple[Array | None, KVCache | None]:
        """tokens int [B, T]; attention_mask [B, T] marks real tokens (left padding).

        Returns (logits [B, T or 1, V] or None, the updated cache or None). With
        `logits="none"` the pass stops after the deepest captured layer.
        """
        config = self.config
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
        if attention_mask is None:
            attention_mask = jnp.ones(tokens.shape, bool)
        if attention_mask.shape != tokens.shape:
            raise ValueError(f"attention_mask shape {attention_mask.shape} != tokens shape {tokens.shape}")
        if logits not in ("all", "last", "none"):
            raise ValueError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        if cache is not None and logits == "none":
            raise ValueError("a cached forward must compute logits")
        new_mask = attention_mask.astype(bool)
        capture = capture or Capture(sites=())

        if cache is None:
            key_valid = new_mask
            query_slots = jnp.arange(tokens.shape[1])
            if positions is None:
                positions = positions_from_mask(new_mask)
        else:
            key_valid = jax.lax.dynamic_update_slice(cache.key_valid, new_mask, (0, cache.index))
            query_slots = cache.index + jnp.arange(tokens.shape[1])
            if positions is None:
                seen = jnp.sum(cache.key_valid, axis=1, keepdims=True)
                positions = seen + positions_from_mask(new_mask)

        masks = {w: make_attention_mask(query_slots, key_valid, w) for w in set(config.sliding_windows)}
        inv_freq, rope_scale = rope_inverse_frequencies(config)
        cos, sin = rope_cos_sin(positions, jnp.asarray(inv_freq), rope_scale, self.dtype)

        last_layer = config.num_layers - 1 if logits != "none" else capture.deepest_layer(config.num_layers)
        x = constrain(self.embed(tokens), ACTIVATION_AXES)
        new_keys, new_values = [], []
        for i in range(last_layer + 1):
            layer_cache = None if cache is None else {"k": cache.keys[i], "v": cache.values[i]}
            x, layer_cache = self.layers[i](x, cos, sin, masks[config.sliding_windows[i]], layer_cache,
                                            None if cache is None else cache.index, capture.sites_at(i))
            x = constrain(x, ACTIVATION_AXES)
            if layer_cache is not None:
                new_keys.append(layer_cache["k"])
                new_values.append(layer_cache["v"])

        new_cache = None
        if cache is not None:
            new_cache = KVCache(keys=tuple(new_keys), values=tuple(new_values), key_valid=key_valid,
                                index=cache.index + tokens.shape[1])
        if logits == "none":
            return None, new_cache
        if logits == "last":
            x = x[:, -1:, :]
        x = self.norm(x)
        out = self.embed_tokens.attend(x) if self.lm_head is None else self.lm_head(x)
        out = self.final_logits(out)
        if "logits" in capture.sites:
            self.sow(nnx.Intermediate, "logits", out)
        return out, new_cache
