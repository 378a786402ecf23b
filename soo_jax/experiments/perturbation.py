"""The matched-perturbation control: a random LoRA update as large as a fine-tune, by KL.

An adapter with the run's LoRA settings whose B matrices point in a random direction (standard
normal, seeded) and are scaled so that KL(base || perturbed) on the general prompts, measured as
the evaluation measures it (`soo_jax.eval.capability.next_token_kl`), equals a target: the SOO
arm's KL for the same seed. It separates "SOO moved the answers" from "any change of this size
moves them".
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from soo_jax.eval.capability import base_view, next_token_kl
from soo_jax.lora import LoRAConfig, adapter_slices, apply_lora, lora_linears, set_dropout

__all__ = ["Calibration", "random_direction", "matched_perturbation"]


@dataclasses.dataclass(frozen=True)
class Calibration:
    scale: float
    kl: float
    target_kl: float
    evaluations: list[tuple[float, float]]  # (scale, KL) in the order tried


def random_direction(model, seed: int) -> None:
    """Sets every real adapter's B to independent standard-normal draws (A keeps its seeded
    Kaiming-uniform initialisation); the update is then scaled through B."""
    key = jax.random.key(seed)
    for index, piece in enumerate(adapter_slices(model)):
        b = piece.get("b")
        piece.set("b", jax.random.normal(jax.random.fold_in(key, index), b.shape, jnp.float32))


def matched_perturbation(model, lora_config: LoRAConfig, tokenizer, prompts: Sequence[str], *, target_kl: float,
                         seed: int, chat_template: bool = True, batch_size: int = 16, rtol: float = 0.02,
                         max_evaluations: int = 12, log: Callable[[str], None] | None = None) -> Calibration:
    """Attaches a random adapter to `model` (in place, dropout off) scaled so that its next-token
    KL(base || model) on `prompts` is within `rtol` of `target_kl`. KL grows like scale^2 for small
    updates, so each new scale comes from the log-log slope of the last two evaluations."""
    if not target_kl > 0 or not math.isfinite(target_kl):
        raise ValueError(f"target_kl must be a positive finite number, got {target_kl}")
    apply_lora(model, lora_config, rngs=nnx.Rngs(params=seed, dropout=seed))
    set_dropout(model, False)
    random_direction(model, seed)
    # Each B variable and its direction, whole (a stacked one's rows without an adapter are zero).
    directions = [(linear.lora.b, np.asarray(linear.lora.b[...])) for _, linear in lora_linears(model)
                  if linear.lora is not None]
    reference = base_view(model)

    def kl_at(scale: float) -> float:
        for variable, direction in directions:
            variable[...] = jnp.asarray(scale * direction, variable.dtype)
        return next_token_kl(reference, model, tokenizer, prompts, chat_template=chat_template,
                             batch_size=batch_size)["mean_kl_base_tuned"]

    tried: list[tuple[float, float]] = []
    scale, slope = 1e-3, 2.0
    for _ in range(max_evaluations):
        kl = kl_at(scale)
        tried.append((scale, kl))
        if log:
            log(f"matched perturbation: scale {scale:.4g} -> KL {kl:.4g} (target {target_kl:.4g})")
        if abs(kl / target_kl - 1) <= rtol:
            return Calibration(scale=scale, kl=kl, target_kl=target_kl, evaluations=tried)
        if len(tried) >= 2:
            (s0, k0), (s1, k1) = tried[-2], tried[-1]
            if k0 > 0 and k1 > 0 and s0 != s1 and k0 != k1:
                slope = float(np.clip(math.log(k1 / k0) / math.log(s1 / s0), 0.5, 4.0))
        scale = scale * (target_kl / max(kl, 1e-12)) ** (1 / slope) if kl > 0 else scale * 10
    raise RuntimeError(f"matched perturbation: no scale within {rtol:.0%} of KL {target_kl:.4g} after "
                       f"{max_evaluations} tries: {tried}")
