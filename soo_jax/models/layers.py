"""Layers shared by every decoder family: RMSNorm, RoPE, linear projections, attention, MLP.

Shapes: B batch, T query tokens, S key slots (T without a cache, the cache length with one),
D model width, H query heads, K key/value heads, G = H // K query heads per KV head, E head dim.

Parameters carry `logical_axes` metadata (e.g. ('embed', 'mlp')); `soo_jax.sharding` maps those
names to mesh axes, so sharding is data rather than code in the layers. `stacked` builds L copies
of a module as one module whose parameters have a leading 'layers' axis (the decoder stack).
"""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx, struct
from jax.ad_checkpoint import checkpoint_name

from soo_jax.models.config import ModelConfig

Array = jax.Array

# Every site a decoder layer can sow: the outputs of its linear maps and the residual stream
# after the block. "o_proj" is the SOO site of the paper.
LINEAR_SITES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LAYER_SITES = LINEAR_SITES + ("residual",)

_INIT_STDDEV = 0.02


def param(value: Array, axes: tuple[str | None, ...]) -> nnx.Param:
    if value.ndim != len(axes):
        raise ValueError(f"logical axes {axes} do not match a parameter of shape {value.shape}")
    return nnx.Param(value, logical_axes=axes)


M = TypeVar("M", bound=nnx.Module)
LAYERS_AXIS = "layers"


def stacked(make: Callable[[nnx.Rngs], M], num: int, rngs: nnx.Rngs) -> M:
    """`num` independently initialised copies of `make(rngs)` as one module: every variable gets
    a leading axis of size `num`, and parameters the logical axis 'layers' in front of theirs
    (mapped to no mesh axis by default, so each device holds every layer's slice)."""
    @nnx.split_rngs(splits=num)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_all(rngs: nnx.Rngs) -> M:
        return make(rngs)

    module = make_all(rngs)
    for _, variable in nnx.iter_graph(module):
        if isinstance(variable, nnx.Variable) and "logical_axes" in variable.get_metadata():
            variable.set_metadata("logical_axes", (LAYERS_AXIS, *variable.get_metadata("logical_axes")))
    return module


def is_stacked(variable: nnx.Variable) -> bool:
    axes = variable.get_metadata().get("logical_axes") or ()
    return bool(axes) and axes[0] == LAYERS_AXIS


class RMSNorm(nnx.Module):
    """y = x / rms(x) * w (Llama) or * (1 + w) (Gemma), normalised in float32 as transformers does."""

    def __init__(self, dim: int, eps: float, *, unit_offset: bool, param_dtype):
        init = jnp.zeros if unit_offset else jnp.ones
        self.scale = param(init((dim,), param_dtype), ("norm",))
        self.eps = eps
        self.unit_offset = unit_offset

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.unit_offset:
            # Gemma multiplies in float32 before casting back; Llama casts first.
            return (normed * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)
        return (self.scale[...] * normed.astype(x.dtype)).astype(x.dtype)


class Linear(nnx.Module):
    """y = x W (+ b) (+ LoRA delta). Kernels are stored (in, out): PyTorch weights transposed."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
                 axes: tuple[str | None, str | None], site: str, dtype, param_dtype, rngs: nnx.Rngs):
        kernel = _INIT_STDDEV * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype)
        self.kernel = param(kernel, axes)
        self.bias = param(jnp.zeros((out_features,), param_dtype), (axes[1],)) if use_bias else None
        self.site = site
        self.dtype = dtype
        # A LoRA adapter (soo_jax.lora) is attached here by graph surgery; None means plain linear.
        self.lora = nnx.data(None)

    @property
    def in_features(self) -> int:
        return self.kernel.shape[-2]  # [in, out], or [L, in, out] in the stacked layers

    @property
    def out_features(self) -> int:
        return self.kernel.shape[-1]

    def __call__(self, x: Array, *, sow: bool = False) -> Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None:
            y = y + self.lora(x).astype(self.dtype)
        # Named by its site, so a remat policy can keep exactly it (REMAT_POLICIES "save_o_proj").
        y = checkpoint_name(y, self.site)
        if sow:
            self.sow(nnx.Intermediate, "activation", y)
        return y


class Embedding(nnx.Module):
    def __init__(self, vocab_size: int, dim: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        table = _INIT_STDDEV * jax.random.normal(rngs.params(), (vocab_size, dim), param_dtype)
        self.embedding = param(table, ("vocab", "embed"))
        self.dtype = dtype

    def __call__(self, tokens: Array) -> Array:
        return jnp.take(self.embedding[...], tokens, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        """Tied output head: logits = x E^T."""
        return jnp.dot(x.astype(self.dtype), self.embedding[...].astype(self.dtype).T)


# --- Rotary position embedding -------------------------------------------------------------

def rope_cos_sin(positions: Array, inv_freq: Array, scaling: float, dtype) -> tuple[Array, Array]:
    """cos/sin tables [B, T, E] for integer positions [B, T], computed in float32."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq[None, None, :]
    angles = jnp.concatenate([freqs, freqs], axis=-1)
    return (jnp.cos(angles) * scaling).astype(dtype), (jnp.sin(angles) * scaling).astype(dtype)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """Rotates x [B, T, heads, E] by the half-split convention transformers uses."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


# --- What a decoder layer reads ------------------------------------------------------------

NO_WINDOW = jnp.iinfo(jnp.int32).max  # a per-layer window value meaning "global attention"


@struct.dataclass
class LayerCache:
    """The stacked cache [L, B, S, K, E], which layer reads and writes it, and the slot where this
    call's tokens go (see `write_and_read` for how the stack stays in place)."""

    keys: Array
    values: Array
    layer: Array  # int32 scalar
    index: Array  # int32 scalar

    def write_and_read(self, keys: Array, values: Array) -> tuple["LayerCache", Array, Array]:
        """Writes keys/values [B, T, K, E] at slot `index` of this layer; returns the cache and this
        layer's keys/values [B, S, K, E] with them in."""
        def update(stack: Array, new: Array) -> tuple[Array, Array]:
            layer = jax.lax.dynamic_index_in_dim(stack, self.layer, keepdims=False)
            layer = jax.lax.dynamic_update_slice(layer, new.astype(stack.dtype), (0, self.index, 0, 0))
            # The stack takes the whole updated layer: a write that depends on the read, so XLA
            # updates the stack in place (writing only the new rows, unordered with the read, made
            # it copy the whole stack once per layer and decode step).
            return jax.lax.dynamic_update_index_in_dim(stack, layer, self.layer, 0), layer

        stack_k, layer_k = update(self.keys, keys)
        stack_v, layer_v = update(self.values, values)
        return self.replace(keys=stack_k, values=stack_v), layer_k, layer_v


@struct.dataclass
class LayerInputs:
    """Everything a decoder layer reads besides the residual stream x [B, T, D]. The layer loop
    builds one per layer: the RoPE tables are shared, the mask carries this layer's window, the
    cache is the stacked cache with this layer's index (None without one)."""

    cos: Array  # [B, T, E]
    sin: Array  # [B, T, E]
    mask: Array  # bool [B, T, S]
    cache: LayerCache | None = None


def windowed_mask(visible: Array, distance: Array, window: Array) -> Array:
    """visible bool [B, T, S] (causal and key padding), distance int [T, S] (query slot - key
    slot), window int scalar (NO_WINDOW for global attention) -> this layer's mask [B, T, S]:
    a traced window, so layers with and without one share one compiled block."""
    return visible & (distance < window)[None]


# --- Attention -----------------------------------------------------------------------------

def make_attention_mask(query_slots: Array, key_valid: Array, window: int | None) -> Array:
    """Boolean mask [B, T, S]: causal over cache slots, key padding, optional sliding window.

    Slots are indices into the key sequence (the KV cache when decoding). With left padding the
    real tokens are contiguous, so slot distances equal position distances and the window test
    matches transformers' `q - k < window`.
    """
    key_slots = jnp.arange(key_valid.shape[-1])
    allowed = key_slots[None, :] <= query_slots[:, None]
    if window is not None:
        allowed &= (query_slots[:, None] - key_slots[None, :]) < window
    return allowed[None, :, :] & key_valid[:, None, :].astype(bool)


def dot_product_attention(q: Array, k: Array, v: Array, mask: Array, *, scale: float,
                          softcap: float | None) -> Array:
    """softmax(q k^T * scale [softcapped]) v with grouped KV heads.

    q [B, T, H, E], k/v [B, S, K, E], mask [B, T, S] -> [B, T, H, E]. Scores and softmax in
    float32, probabilities cast back to the compute dtype (as transformers' eager attention).
    """
    batch, q_len, num_heads, head_dim = q.shape
    if q_len == 1:
        return _single_query_attention(q, k, v, mask, scale=scale, softcap=softcap)
    num_kv = k.shape[2]
    groups = num_heads // num_kv
    # One plain [G*T, E] @ [E, S] matmul per (row, KV head): the query heads sharing a KV head
    # are stacked as rows. XLA:CPU runs this layout several times faster than the einsum
    # "btkge,bske->bkgts" (which contracts the last axis of both operands); on accelerators
    # the two lower alike.
    q = q.reshape(batch, q_len, num_kv, groups, head_dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(batch, num_kv, groups * q_len, head_dim)
    scores = jnp.matmul(q, k.transpose(0, 2, 3, 1)).astype(jnp.float32) * scale
    scores = scores.reshape(batch, num_kv, groups, q_len, -1)
    probs = _attention_probs(scores, mask[:, None, None, :, :], softcap, axis=-1).astype(v.dtype)
    probs = probs.reshape(batch, num_kv, groups * q_len, -1)
    out = jnp.matmul(probs, v.transpose(0, 2, 1, 3))  # [B, K, G*T, E]
    out = out.reshape(batch, num_kv, groups, q_len, head_dim).transpose(0, 3, 1, 2, 4)
    return out.reshape(batch, q_len, num_heads, head_dim)


def _attention_probs(scores: Array, mask: Array, softcap: float | None, *, axis: int) -> Array:
    """float32 scores -> [soft-capped,] masked softmax along the key axis."""
    if softcap is not None:
        scores = jnp.tanh(scores / softcap) * softcap
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=axis)


def _single_query_attention(q: Array, k: Array, v: Array, mask: Array, *, scale: float,
                            softcap: float | None) -> Array:
    """dot_product_attention for one query position (a decode step), as multiply-and-reduce:
    with a single query row the matmuls degenerate to matrix-vector products, which XLA:CPU
    runs ~3x slower than this fused elementwise form (same sums, same float32 softmax)."""
    batch, _, num_heads, head_dim = q.shape
    num_kv = k.shape[2]
    q = q.reshape(batch, 1, num_kv, num_heads // num_kv, head_dim)  # [B, 1, K, G, E]
    # Products and sums in float32 so bf16 caches are not reduced in bf16.
    q, k_f32 = q.astype(jnp.float32), k.astype(jnp.float32)
    scores = jnp.sum(q * k_f32[:, :, :, None, :], axis=-1) * scale  # [B, S, K, G]
    probs = _attention_probs(scores, mask[:, 0, :, None, None], softcap, axis=1)
    probs = probs.astype(v.dtype).astype(jnp.float32)  # rounded as the prefill path rounds them
    out = jnp.sum(probs[..., None] * v.astype(jnp.float32)[:, :, :, None, :], axis=1)  # [B, K, G, E]
    return out.reshape(batch, 1, num_heads, head_dim).astype(v.dtype)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, h, k, e = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = Linear(d, h * e, use_bias=config.qkv_bias, axes=("embed", "q_heads"), site="q_proj", **common)
        self.k_proj = Linear(d, k * e, use_bias=config.qkv_bias, axes=("embed", "kv_heads"), site="k_proj", **common)
        self.v_proj = Linear(d, k * e, use_bias=config.qkv_bias, axes=("embed", "kv_heads"), site="v_proj", **common)
        self.o_proj = Linear(h * e, d, use_bias=config.o_bias, axes=("q_heads", "embed"), site="o_proj", **common)
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, e
        self.scale = config.query_scale
        self.softcap = config.attn_logit_softcap

    @jax.named_scope("attention")
    def __call__(self, x: Array, inputs: LayerInputs, sites: frozenset[str]) -> tuple[Array, LayerCache | None]:
        """x [B, T, D] -> (out [B, T, D], the cache with this call's keys/values written, or None)."""
        batch, q_len, _ = x.shape
        q = self.q_proj(x, sow="q_proj" in sites).reshape(batch, q_len, self.num_heads, self.head_dim)
        k = self.k_proj(x, sow="k_proj" in sites).reshape(batch, q_len, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x, sow="v_proj" in sites).reshape(batch, q_len, self.num_kv_heads, self.head_dim)
        q, k = apply_rope(q, inputs.cos, inputs.sin), apply_rope(k, inputs.cos, inputs.sin)
        cache = inputs.cache
        if cache is not None:
            # Attend over the whole cache, read back in the compute dtype (a bf16 cache rounds the
            # new keys exactly as the stored ones).
            cache, k, v = cache.write_and_read(k, v)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        out = dot_product_attention(q, k, v, inputs.mask, scale=self.scale, softcap=self.softcap)
        out = self.o_proj(out.reshape(batch, q_len, self.num_heads * self.head_dim), sow="o_proj" in sites)
        return out, cache


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        common = dict(use_bias=config.mlp_bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = Linear(d, f, axes=("embed", "mlp"), site="gate_proj", **common)
        self.up_proj = Linear(d, f, axes=("embed", "mlp"), site="up_proj", **common)
        self.down_proj = Linear(f, d, axes=("mlp", "embed"), site="down_proj", **common)
        self.activation = config.hidden_act

    @jax.named_scope("mlp")
    def __call__(self, x: Array, sites: frozenset[str]) -> Array:
        gate = self.gate_proj(x, sow="gate_proj" in sites)
        if self.activation == "silu":
            gate = jax.nn.silu(gate)
        else:  # gelu_pytorch_tanh
            gate = jax.nn.gelu(gate, approximate=True)
        hidden = gate * self.up_proj(x, sow="up_proj" in sites)
        return self.down_proj(hidden, sow="down_proj" in sites)
