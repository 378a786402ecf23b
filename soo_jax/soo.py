"""The Self-Other Overlap objective for language models.

Paper (arXiv v1): D(A_self, A_other) = MSE between the activations at the output of
`self_attn.o_proj` of one decoder layer, for a self-referencing prompt and its matched
other-referencing prompt. The paper leaves token alignment and pooling unspecified; following
our choice (docs/paper_notes.md §1.3) prompts are left-padded to a common length
(end-aligned, as the authors' tokenizer did) and:

    pooling="full": mean over the positions real in BOTH prompts and over hidden dims (default)
    pooling="mean": masked mean over each prompt's tokens first, then MSE over hidden dims
    pooling="last": the final token of each prompt

Each pair's value is averaged over pairs. The authors' public code instead used a KL divergence
between the output distributions (`kl_logits`, docs/paper_notes.md §1.2), kept here to reproduce it.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Array = jax.Array
Pooling = Literal["full", "mean", "last"]
POOLINGS = ("full", "mean", "last")


def split_pairs(x: Array) -> tuple[Array, Array]:
    """Interleaved rows [self_0, other_0, self_1, other_1, ...] -> (self [B, ...], other [B, ...]).

    Interleaving keeps each pair inside any even-sized contiguous slice of the batch, so a data
    shard or a host's slice always holds whole pairs.
    """
    if x.shape[0] % 2:
        raise ValueError(f"a pair batch needs an even number of rows, got {x.shape[0]}")
    return x[0::2], x[1::2]


def per_pair_mse(acts_self: Array, acts_other: Array, mask_self: Array, mask_other: Array,
                 pooling: Pooling = "full") -> Array:
    """SOO value of each pair [B] from activations [B, T, D] and masks [B, T] (left-padded)."""
    if acts_self.shape != acts_other.shape:
        raise ValueError(f"self activations {acts_self.shape} and other activations {acts_other.shape} differ")
    a = acts_self.astype(jnp.float32)
    b = acts_other.astype(jnp.float32)
    m_self = mask_self.astype(jnp.float32)
    m_other = mask_other.astype(jnp.float32)
    if pooling == "full":
        both = (m_self * m_other)[..., None]
        squared = jnp.sum(both * (a - b) ** 2, axis=(1, 2))
        return squared / jnp.maximum(jnp.sum(both, axis=(1, 2)) * a.shape[-1], 1.0)
    if pooling == "mean":
        mean_a = jnp.sum(a * m_self[..., None], axis=1) / jnp.maximum(jnp.sum(m_self, axis=1, keepdims=True), 1.0)
        mean_b = jnp.sum(b * m_other[..., None], axis=1) / jnp.maximum(jnp.sum(m_other, axis=1, keepdims=True), 1.0)
        return jnp.mean((mean_a - mean_b) ** 2, axis=-1)
    if pooling == "last":
        return jnp.mean((a[:, -1] - b[:, -1]) ** 2, axis=-1)
    raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")


def soo_mse(acts: Array, mask: Array, pooling: Pooling = "full") -> Array:
    """Mean SOO value over the pairs of one batched forward ([2B, T, D], interleaved rows)."""
    acts_self, acts_other = split_pairs(acts)
    mask_self, mask_other = split_pairs(mask)
    return jnp.mean(per_pair_mse(acts_self, acts_other, mask_self, mask_other, pooling))


def soo_kl_logits(logits: Array, mask: Array | None = None) -> Array:
    """The public code's objective: KL(P_other || P_self) summed over positions and vocabulary,
    divided by the number of pairs (`F.kl_div(..., reduction="batchmean")`). With `mask=None`
    every position counts, padding included, as in the authors' code."""
    logits_self, logits_other = split_pairs(logits.astype(jnp.float32))
    log_p_self = jax.nn.log_softmax(logits_self, axis=-1)
    log_p_other = jax.nn.log_softmax(logits_other, axis=-1)
    kl = jnp.sum(jnp.exp(log_p_other) * (log_p_other - log_p_self), axis=-1)  # [B, T]
    if mask is not None:
        mask_self, mask_other = split_pairs(mask.astype(jnp.float32))
        kl = kl * mask_self * mask_other
    return jnp.sum(kl) / logits_self.shape[0]


def kl_to_reference(logits: Array, reference_logits: Array, mask: Array) -> Array:
    """Mean over real positions of KL(P_reference || P_model): a capability-retention penalty."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(jax.lax.stop_gradient(reference_logits).astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)
    weights = mask.astype(jnp.float32)
    return jnp.sum(kl * weights) / jnp.maximum(jnp.sum(weights), 1.0)
