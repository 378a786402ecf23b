"""Gemma-2 (Gemma-2-27b-it and smaller).

Differences from the Llama block, all in the equations below:
    x0  = Embed(tokens) * sqrt(D)                 (scale rounded to the parameter dtype)
    h   = x + RMSNorm'(Attn(RMSNorm'(x)))         (post-attention norm on the branch)
    out = h + RMSNorm'(MLP(RMSNorm'(h)))          (pre- and post-feed-forward norms)
    RMSNorm'(x) = x / rms(x) * (1 + w)
    attention scores: q k^T * query_pre_attn_scalar^-1/2, soft-capped c*tanh(s/c) with c = 50,
                      sliding window on alternating layers
    MLP activation:   gelu (tanh approximation)
    logits:           c*tanh(z/c) with c = 30
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from soo_jax.models.config import ModelConfig
from soo_jax.models.layers import Attention, GatedMLP, LayerInputs, RMSNorm
from soo_jax.models.transformer import CausalLM


class Gemma2Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        def norm():
            return RMSNorm(config.hidden_size, config.rms_norm_eps, unit_offset=True, param_dtype=param_dtype)

        self.input_layernorm = norm()
        self.self_attn = Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.mlp = GatedMLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_feedforward_layernorm = norm()

    def __call__(self, x: jax.Array, inputs: LayerInputs, sites: frozenset[str]):
        """x [B, T, D] -> (out [B, T, D], the stacked cache with this layer's entries written, or None)."""
        attn_out, cache = self.self_attn(self.input_layernorm(x), inputs, sites)
        h = x + self.post_attention_layernorm(attn_out)
        out = h + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(h), sites))
        if "residual" in sites:
            self.sow(nnx.Intermediate, "residual", out)
        return out, cache


class Gemma2ForCausalLM(CausalLM):
    block_class = Gemma2Block
    norm_unit_offset = True

    def embed(self, tokens: jax.Array) -> jax.Array:
        scale = jnp.asarray(self.config.hidden_size ** 0.5, dtype=self.param_dtype)
        return (self.embed_tokens(tokens).astype(self.param_dtype) * scale).astype(self.dtype)

    def final_logits(self, logits: jax.Array) -> jax.Array:
        cap = self.config.final_logit_softcap
        if cap is None:
            return logits
        return jnp.tanh(logits / cap) * cap
