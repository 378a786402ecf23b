"""Adapters that look trained: B drawn at random (a fresh adapter has B = 0 and does nothing)."""

import jax

from soo_jax.lora import lora_linears


def randomise_lora_b(model, seed: int = 1, scale: float = 0.1):
    key = jax.random.key(seed)
    for _, linear in lora_linears(model):
        if linear.lora is not None:
            key, sub = jax.random.split(key)
            linear.lora.b[...] = scale * jax.random.normal(sub, linear.lora.b.shape)
    return model
