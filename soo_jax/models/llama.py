"""Llama family: Llama / SmolLM2, Mistral, Qwen2.

One pre-norm block per layer:
    h   = x + Attn(RMSNorm(x))        (RoPE, grouped KV heads, optional sliding window,
                                        q/k/v biases for Qwen2)
    out = h + MLP(RMSNorm(h))         (SwiGLU: down(silu(gate(h)) * up(h)))
The three variants differ only in ModelConfig flags.
"""

from __future__ import annotations

import jax
from flax import nnx

from soo_jax.models.config import ModelConfig
from soo_jax.models.layers import Attention, GatedMLP, LayerInputs, RMSNorm
from soo_jax.models.transformer import CausalLM


class LlamaBlock(nnx.Module):
    def __init__(self, config: ModelConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        norm = dict(unit_offset=False, param_dtype=param_dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **norm)
        self.self_attn = Attention(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, **norm)
        self.mlp = GatedMLP(config, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array, inputs: LayerInputs, sites: frozenset[str]):
        """x [B, T, D] -> (out [B, T, D], the stacked cache with this layer's entries written, or None)."""
        attn_out, cache = self.self_attn(self.input_layernorm(x), inputs, sites)
        h = x + attn_out
        out = h + self.mlp(self.post_attention_layernorm(h), sites)
        if "residual" in sites:
            self.sow(nnx.Intermediate, "residual", out)
        return out, cache


class LlamaForCausalLM(CausalLM):
    block_class = LlamaBlock
    norm_unit_offset = False
