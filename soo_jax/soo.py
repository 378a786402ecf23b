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
The objective `lm` is no SOO at all: the ordinary next-token loss on the same self and other
prompts, the control that separates SOO from plain fine-tuning on these prompts (its SOO value at
the site is still measured and logged, not trained).

`LossConfig` names the objective's settings and `soo_loss` computes it on one pair batch (rows
interleaved, as `soo_jax.data.batching.PairBatch` holds them); `soo_jax.train.step` differentiates
it with respect to the LoRA parameters.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp

from soo_jax.checks import field_flag, field_indices, field_number
from soo_jax.models.activations import forward_with_activations
from soo_jax.models.layers import LAYER_SITES

if TYPE_CHECKING:
    from soo_jax.models.transformer import CausalLM

Array = jax.Array
Pooling = Literal["full", "mean", "last"]
POOLINGS = ("full", "mean", "last")
MICROBATCH_REDUCTIONS = ("mean", "sum")
OBJECTIVES = ("mse", "kl_logits", "lm")


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


def next_token_nll(logits: Array, tokens: Array, mask: Array) -> Array:
    """Mean over real next-token targets (position t and t+1 both real) of -log p(token t+1)."""
    log_p = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_p, tokens[:, 1:, None].astype(jnp.int32), axis=-1)[..., 0]
    weights = (mask[:, :-1] & mask[:, 1:]).astype(jnp.float32)
    return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def kl_to_reference(logits: Array, reference_logits: Array, mask: Array) -> Array:
    """Mean over real positions of KL(P_reference || P_model): a capability-retention penalty."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(jax.lax.stop_gradient(reference_logits).astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)
    weights = mask.astype(jnp.float32)
    return jnp.sum(kl * weights) / jnp.maximum(jnp.sum(weights), 1.0)


# --- The objective of a fine-tuning run ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LossConfig:
    """objective "mse": SOO MSE at `site` of `layers` (mean over layers); "kl_logits": the public
    code's KL between output distributions; "lm": the next-token loss on every prompt of the pair
    batch (a control: the SOO MSE is measured, not trained). `kl_to_base_weight` > 0 adds KL(base || tuned) on the
    training prompts' next-token distributions (off by default: the paper has no such term).

    `microbatch_reduction`: how the microbatches of one optimizer step combine. "mean" averages
    their gradients (the step's gradient is that of one batch of all its pairs); "sum" adds them,
    as the public code did (it called `backward()` on every batch's loss without dividing by its
    4 accumulation steps, docs/paper_notes.md §1.2). Logged metrics are per-microbatch means
    either way, comparable to the per-batch losses the authors printed."""

    objective: Literal["mse", "kl_logits", "lm"] = "mse"  # "mse" (paper), "kl_logits" (the public code), "lm"
    site: str = "o_proj"
    layers: tuple[int, ...] = (19,)
    pooling: str = "full"  # "full" | "mean" | "last" (docs/paper_notes.md §1.3)
    kl_mask_padding: bool = True  # kl_logits only: False reproduces the public code (pads included)
    kl_to_base_weight: float = 0.0
    microbatch_reduction: Literal["mean", "sum"] = "mean"  # "sum": the public code's (docs/paper_notes.md §1.2)

    def __post_init__(self):
        # Each message starts with the field's name: a run config reports it as `config.loss.<field>: ...`.
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective: {self.objective!r} is not one of {OBJECTIVES}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling: {self.pooling!r} is not one of {POOLINGS}")
        if self.microbatch_reduction not in MICROBATCH_REDUCTIONS:
            raise ValueError(f"microbatch_reduction: {self.microbatch_reduction!r} is not one of "
                             f"{MICROBATCH_REDUCTIONS}")
        if self.site not in LAYER_SITES:
            raise ValueError(f"site: {self.site!r} is not one of {LAYER_SITES}")
        layers = field_indices("layers", self.layers)
        if not layers:
            raise ValueError(f"layers: must name one or more layer indices >= 0, got {self.layers!r}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "kl_mask_padding", field_flag("kl_mask_padding", self.kl_mask_padding))
        object.__setattr__(self, "kl_to_base_weight", field_number("kl_to_base_weight", self.kl_to_base_weight, low=0))


def metric_names(config: LossConfig) -> tuple[str, ...]:
    """The metrics `soo_loss` returns for `config`, in order."""
    return ("soo", *(("lm",) if config.objective == "lm" else ()),
            *(("kl_to_base",) if config.kl_to_base_weight > 0 else ()))


def soo_loss(model: CausalLM, tokens: Array, mask: Array, config: LossConfig,
             base_model: CausalLM | None = None) -> tuple[Array, dict[str, Array]]:
    """Loss and metrics for one pair batch (tokens/mask [2B, T], rows self_0, other_0, self_1, ...)."""
    need_logits = config.objective != "mse" or config.kl_to_base_weight > 0
    logits, acts = forward_with_activations(
        model, tokens, mask, sites=(config.site,) if config.objective != "kl_logits" else (),
        layers=config.layers, logits="all" if need_logits else "none")
    if config.objective == "kl_logits":
        soo = soo_kl_logits(logits, mask if config.kl_mask_padding else None)
    else:
        soo = jnp.mean(jnp.stack([soo_mse(acts[config.site][layer], mask, config.pooling)
                                  for layer in config.layers]))
    metrics = {"soo": soo}
    loss = soo
    if config.objective == "lm":
        metrics = {"soo": jax.lax.stop_gradient(soo), "lm": next_token_nll(logits, tokens, mask)}
        loss = metrics["lm"]
    if config.kl_to_base_weight > 0:
        base_logits, _ = base_model(tokens, mask)
        kl = kl_to_reference(logits, base_logits, mask)
        metrics["kl_to_base"] = kl
        loss = loss + config.kl_to_base_weight * kl
    return loss, metrics
