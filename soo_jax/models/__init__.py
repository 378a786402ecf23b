"""Flax NNX ports of the decoder families SOO fine-tuning needs, and their loaders."""

from soo_jax.models.activations import forward_with_activations
from soo_jax.models.config import ModelConfig, from_hf_config
from soo_jax.models.gemma2 import Gemma2ForCausalLM
from soo_jax.models.llama import LlamaForCausalLM
from soo_jax.models.transformer import Capture, CausalLM, KVCache, init_cache

FAMILIES: dict[str, type[CausalLM]] = {"llama": LlamaForCausalLM, "gemma2": Gemma2ForCausalLM}


def build_model(config: ModelConfig, *, dtype=None, param_dtype=None, rngs=None, scan_layers: bool = True,
                remat: str = "none") -> CausalLM:
    """A randomly initialised model of `config` (use `from_pretrained` for real weights).

    `scan_layers` / `remat`: how the layer loop runs (see soo_jax.models.transformer)."""
    import jax.numpy as jnp

    dtype = jnp.float32 if dtype is None else dtype
    return FAMILIES[config.family](config, dtype=dtype, param_dtype=param_dtype or dtype, rngs=rngs,
                                   scan_layers=scan_layers, remat=remat)


__all__ = ["Capture", "CausalLM", "Gemma2ForCausalLM", "KVCache", "LlamaForCausalLM", "ModelConfig",
           "build_model", "forward_with_activations", "from_hf_config", "init_cache"]
