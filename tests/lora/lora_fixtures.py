"""Adapters that look trained: B drawn at random (a fresh adapter has B = 0 and does nothing)."""

import jax

from soo_jax.lora import adapter_slices


def randomise_lora_b(model, seed: int = 1, scale: float = 0.1):
    """Every real adapter (one layer of one module) gets its own random B."""
    key = jax.random.key(seed)
    for adapter in adapter_slices(model):
        key, sub = jax.random.split(key)
        adapter.set("b", scale * jax.random.normal(sub, adapter.get("b").shape))
    return model
