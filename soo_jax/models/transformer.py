"""The decoder-only skeleton every family shares: embed -> L decoder blocks -> final norm -> logits.

A family file (llama.py, gemma2.py) supplies its decoder block and the two places where the
families differ outside the block (embedding scale, final-logit soft-cap); masks, RoPE tables,
the KV cache, the layer loop and activation capture live here once.

The L blocks are one module whose parameters carry a leading `layers` axis (`layers.stacked`).
The layer loop runs block i on slice i of them: with `jax.lax.scan` (`scan_layers=True`, the
default: XLA compiles one block whatever the depth, and under FSDP gathers one layer's weights
at a time) or with a Python loop over the same slices (`scan_layers=False`: every layer its own
HLO, for debugging). Either way each step can sit under `jax.checkpoint` with a remat policy
(`remat`, see REMAT_POLICIES), so the backward recomputes what the policy does not save.
Layers that sow activations (the SOO layer) run as their own scan segment, so the result keeps
its {site: {layer: array}} shape, and without logits the loop stops at the deepest one.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx, struct

from soo_jax.models.capture import LAYER_ACTIVATIONS, MODEL_SITES, Capture, capture_block
from soo_jax.models.config import ModelConfig, rope_inverse_frequencies
from soo_jax.models.layers import (NO_WINDOW, Embedding, LayerCache, LayerInputs, Linear, RMSNorm,
                                   make_attention_mask, rope_cos_sin, stacked, windowed_mask)
from soo_jax.sharding import constrain

Array = jax.Array
LogitsMode = Literal["all", "last", "none"]

ACTIVATION_AXES = ("batch", "length", None)

# model.remat: what a layer's backward may keep from its forward. "none" puts no checkpoint
# boundary (XLA keeps whatever it likes, under FSDP every gathered layer); "full" keeps only
# the layer's input and recomputes the rest; the dots policies keep matmul outputs (those
# without a batch dimension: the weight-only products, i.e. nothing of ours but LoRA's).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_o_proj": jax.checkpoint_policies.save_only_these_names("o_proj"),
}

__all__ = ["ACTIVATION_AXES", "Capture", "CausalLM", "KVCache", "LogitsMode", "MODEL_SITES", "REMAT_POLICIES",
           "extend_cache", "init_cache", "positions_from_mask"]


@struct.dataclass
class KVCache:
    """Keys/values of every layer [L, B, S, K, E], which slots hold real tokens [B, S], and the
    next free slot. Stacked like the layers' parameters, so the layer scan slices it too."""

    keys: Array
    values: Array
    key_valid: Array  # bool [B, S]
    index: Array  # int32 scalar

    @property
    def max_length(self) -> int:
        return self.key_valid.shape[1]

    def broadcast_rows(self, batch: int) -> "KVCache":
        """A one-row cache repeated for `batch` rows."""
        rows = lambda x, axis: jnp.broadcast_to(x, x.shape[:axis] + (batch,) + x.shape[axis + 1:])  # noqa: E731
        return self.replace(keys=rows(self.keys, 1), values=rows(self.values, 1), key_valid=rows(self.key_valid, 0))


def init_cache(config: ModelConfig, batch: int, max_length: int, dtype=jnp.float32) -> KVCache:
    shape = (config.num_layers, batch, max_length, config.num_kv_heads, config.head_dim)
    return KVCache(keys=jnp.zeros(shape, dtype), values=jnp.zeros(shape, dtype),
                   key_valid=jnp.zeros((batch, max_length), bool), index=jnp.zeros((), jnp.int32))


def extend_cache(cache: KVCache, extra_slots: int) -> KVCache:
    """The cache with `extra_slots` empty slots appended after its last one."""
    def pad(x, axis):
        return jnp.pad(x, [(0, extra_slots) if d == axis else (0, 0) for d in range(x.ndim)])
    return cache.replace(keys=pad(cache.keys, 2), values=pad(cache.values, 2), key_valid=pad(cache.key_valid, 1))


def positions_from_mask(attention_mask: Array) -> Array:
    """Left-padded rows count positions from their first real token, as unpadded rows do."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1, 0)


class CausalLM(nnx.Module):
    """Decoder-only language model. Subclasses set `block_class` and `norm_unit_offset`.

    `scan_layers` and `remat` choose how the layer loop runs (see the module docstring); they
    change no number (tests/models/test_scan.py) and may be set on a built model.
    """

    block_class: type[nnx.Module]
    norm_unit_offset: bool = False

    def __init__(self, config: ModelConfig, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None, scan_layers: bool = True, remat: str = "none"):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.dtype, self.param_dtype = dtype, param_dtype
        self.scan_layers, self.remat = bool(scan_layers), check_remat(remat)
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype=dtype,
                                      param_dtype=param_dtype, rngs=rngs)
        block_class = type(self).block_class
        self.layers = stacked(lambda r: block_class(config, dtype=dtype, param_dtype=param_dtype, rngs=r),
                              config.num_layers, rngs)
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

        # Causal + key padding for every layer; each layer then applies its own window.
        visible = make_attention_mask(query_slots, key_valid, None)  # [B, T, S]
        distance = query_slots[:, None] - jnp.arange(key_valid.shape[1])[None, :]  # [T, S]
        inv_freq, rope_scale = rope_inverse_frequencies(config)
        cos, sin = rope_cos_sin(positions, jnp.asarray(inv_freq), rope_scale, self.dtype)
        windows = jnp.asarray([NO_WINDOW if w is None else w for w in config.sliding_windows], jnp.int32)
        shared = SharedInputs(cos=cos, sin=sin, visible=visible, distance=distance, windows=windows)

        num_run = config.num_layers if logits != "none" else capture.deepest_layer(config.num_layers) + 1
        x = constrain(self.embed(tokens), ACTIVATION_AXES)
        kv = None if cache is None else (cache.keys, cache.values)
        x, kv, activations = self._decoder_layers(x, shared, kv, None if cache is None else cache.index,
                                                  capture, num_run)
        if activations:
            self.sow(nnx.Intermediate, LAYER_ACTIVATIONS, activations)

        new_cache = None
        if cache is not None:
            new_cache = KVCache(keys=kv[0], values=kv[1], key_valid=key_valid, index=cache.index + tokens.shape[1])
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

    # The layer loop ------------------------------------------------------------------------
    def _decoder_layers(self, x: Array, shared: "SharedInputs", kv: tuple[Array, Array] | None,
                        cache_index: Array | None, capture: Capture, num_run: int):
        """Blocks 0..num_run-1 on x [B, T, D] -> (x, the stacked keys/values [L, B, S, K, E] with
        this call's entries written, {site: {layer: [B, T, width]}} of the captured layers)."""
        graphdef, rng, weights = nnx.split(self.layers, nnx.RngState, ...)
        # Active dropout streams advance as the blocks draw from them: carried through the loop and
        # written back at the end. Without active dropout (evaluation) nothing is written, so a
        # model built outside a jax transform can run inside one (generation's while_loop).
        drawing = _draws_dropout(self.layers)
        carry = (x, rng if drawing else None, kv)
        weights = (weights, None if drawing else rng)
        activations: dict[str, dict[int, Array]] = {}
        for start, stop, sites in capture.segments(num_run):
            step = functools.partial(_layer_step, graphdef, cache_index=cache_index, sites=sites)
            if self.remat != "none":
                # Inside a scan the loop boundary already stops XLA from merging the forward's
                # and the backward's recomputation, hence no CSE barrier there.
                step = jax.checkpoint(step, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan_layers,
                                      static_argnums=() if self.scan_layers else (3, 4))
            if self.scan_layers:
                carry, sown = jax.lax.scan(lambda c, i: step(weights, shared, c, i), carry,
                                           jnp.arange(start, stop))
                for site, values in sown.items():
                    activations.setdefault(site, {}).update({start + j: values[j] for j in range(stop - start)})
            else:
                for i in range(start, stop):
                    carry, sown = self._unrolled_step(step, weights, shared, carry, i)
                    for site, value in sown.items():
                        activations.setdefault(site, {})[i] = value
        x, rng, kv = carry
        if drawing:
            nnx.update(self.layers, rng)
        return x, kv, activations

    @staticmethod
    def _unrolled_step(step, weights, shared, carry, i: int):
        """Layer i of the Python loop. Its cache is its own one-layer stack, written back into the
        whole stack by static slices: with static layer indices XLA otherwise rewrites the
        in-place update of the shared stack into a copy of it per layer (measured: 5x slower
        decoding on CPU)."""
        x, rng, kv = carry
        if kv is None:
            return step(weights, shared, carry, i, None)
        own = tuple(jax.lax.slice_in_dim(stack, i, i + 1) for stack in kv)
        (x, rng, own), sown = step(weights, shared, (x, rng, own), i, 0)
        kv = tuple(jnp.concatenate([stack[:i], new, stack[i + 1:]]) for stack, new in zip(kv, own))
        return (x, rng, kv), sown


@struct.dataclass
class SharedInputs:
    """What the layers of one forward read: RoPE tables [B, T, E], the causal and key-padding
    mask [B, T, S], query-key slot distances [T, S], and every layer's attention window [L]
    (NO_WINDOW for global attention; Gemma-2 alternates): a scan input, not a Python branch."""

    cos: Array
    sin: Array
    visible: Array
    distance: Array
    windows: Array


def _layer_step(graphdef, weights, shared: SharedInputs, carry, i, cache_layer=None, *, cache_index,
                sites: frozenset[str]):
    """Block i: its slice of the stacked weights and RNG state merged into a block module, run
    on the residual stream. `weights` = (stacked parameters, stacked RNG state or None);
    `carry` = (x [B, T, D], stacked RNG state while dropout draws or None, stacked (keys,
    values) or None, layer `cache_layer` of them this block's, default i); returns (carry, {site:
    activation} of the sites this block sowed)."""
    x, rng, kv = carry
    params, fixed_rng = weights  # RNG state is carried when dropout draws, else fixed
    take = lambda tree: jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), tree)  # noqa: E731
    block = nnx.merge(graphdef, take(params), take(fixed_rng if rng is None else rng))
    cache_layer = i if cache_layer is None else cache_layer
    layer_cache = None if kv is None else LayerCache(keys=kv[0], values=kv[1], index=cache_index,
                                                    layer=jnp.asarray(cache_layer, jnp.int32))
    mask = windowed_mask(shared.visible, shared.distance, shared.windows[i])
    inputs = LayerInputs(cos=shared.cos, sin=shared.sin, mask=mask, cache=layer_cache)
    (x, layer_cache), sown = capture_block(lambda b: b(x, inputs, sites), block)
    x = constrain(x, ACTIVATION_AXES)
    if rng is not None:
        rng = jax.tree.map(lambda s, n: jax.lax.dynamic_update_index_in_dim(s, n, i, 0), rng,
                           nnx.state(block, nnx.RngState))
    if kv is not None:
        kv = (layer_cache.keys, layer_cache.values)
    return (x, rng, kv), sown


def _draws_dropout(module: nnx.Module) -> bool:
    return any(isinstance(node, nnx.Dropout) and not node.deterministic and node.rate > 0
               for _, node in nnx.iter_graph(module))


def check_remat(remat: str) -> str:
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; use one of {sorted(REMAT_POLICIES)}")
    return remat
