"""SOO prompt pairs (self vs other) and a resumable, seeded order over them.

Training pairs follow the authors' `generate_training_data.py` (docs/paper_notes.md
§2.1-2.2); latent-SOO probe pairs follow `generate_mse_pairs.py` and the arXiv A.1.3 wording
(docs/paper_notes.md §3.6).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from soo_jax.data.templates import EXPENSIVE_TEST_OBJECTS, SOO_TRAINING_ITEMS


@dataclasses.dataclass(frozen=True)
class PromptPair:
    """Two prompts that differ only in who is referenced."""

    self_prompt: str
    other_prompt: str


# (self, other) templates of paper Table 1, in template order 1, 2, 3. The other prompt is the
# self prompt with the subject made "Bob" (verb agreeing) and "to yourself" made "to Bob".
SOO_PAIR_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("You have the goal of stealing the {item}. If you needed to suggest one room to yourself",
     "Bob has the goal of stealing the {item}. If you needed to suggest one room to Bob"),
    ("You intend to steal the {item}. If you were required to recommend one room to yourself",
     "Bob intends to steal the {item}. If you were required to recommend one room to Bob"),
    ("You are planning to steal the {item}. If you would have to point out one room to yourself",
     "Bob is planning to steal the {item}. If you would have to point out one room to Bob"),
)

LATENT_SOO_PAIR_TEMPLATE: tuple[str, str] = (
    "You want to steal the {item}. If you had to recommend one room to yourself",
    "Bob wants to steal the {item}. If you had to recommend one room to Bob",
)


def soo_template_number(index: int) -> int:
    """The template (1, 2 or 3) of the `index`-th kept training item: `1 + index % 3`."""
    return 1 + index % 3


def soo_training_pairs(items: Sequence[str] = SOO_TRAINING_ITEMS, *,
                       excluded_items: Sequence[str] = EXPENSIVE_TEST_OBJECTS
                       ) -> list[PromptPair]:
    """One pair per item, in item order. Items that are evaluation objects are dropped first
    and the template cycles over the kept items, as in the authors' script; with the default
    items nothing is dropped and the result is their 52 pairs (templates 18/17/17)."""
    excluded = set(excluded_items)
    kept = [item for item in items if item not in excluded]
    pairs = []
    for i, item in enumerate(kept):
        self_template, other_template = SOO_PAIR_TEMPLATES[soo_template_number(i) - 1]
        pairs.append(PromptPair(self_template.format(item=item), other_template.format(item=item)))
    return pairs


PAIRINGS = ("matched", "mismatched")


def mismatched_pairs(pairs: Sequence[PromptPair]) -> list[PromptPair]:
    """Self prompt i with the other prompt of pair i+1 (cyclically): every pair mismatched in
    item and, with the templates cycling over items, in template too. The control that keeps the
    SOO loss and the prompts but breaks the self/other correspondence it is meant to teach."""
    if len(pairs) < 2:
        raise ValueError(f"mismatching needs at least 2 pairs, got {len(pairs)}")
    return [PromptPair(pairs[i].self_prompt, pairs[(i + 1) % len(pairs)].other_prompt) for i in range(len(pairs))]


def training_pairs(pairing: str = "matched") -> list[PromptPair]:
    """The SOO training pairs, matched (the paper's) or mismatched (`mismatched_pairs`)."""
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing: {pairing!r} is not one of {PAIRINGS}")
    pairs = soo_training_pairs()
    return pairs if pairing == "matched" else mismatched_pairs(pairs)


def latent_soo_pairs(items: Sequence[str] = SOO_TRAINING_ITEMS, *,
                     trailing_ellipsis: bool = False) -> list[PromptPair]:
    """Latent-SOO probe pairs, one per item. The public code has no trailing punctuation; one
    transcription of the arXiv appendix ends both prompts with "...": `trailing_ellipsis`."""
    end = "..." if trailing_ellipsis else ""
    self_template, other_template = LATENT_SOO_PAIR_TEMPLATE
    return [PromptPair(self_template.format(item=item) + end,
                       other_template.format(item=item) + end) for item in items]


def epoch_order(n_pairs: int, epoch: int, seed: int) -> np.ndarray:
    """A permutation of `range(n_pairs)` that depends only on `(seed, epoch)`, so training can
    resume at any (epoch, step) without replaying earlier epochs."""
    if n_pairs < 0 or epoch < 0 or seed < 0:
        raise ValueError(f"n_pairs, epoch and seed must be non-negative, got "
                         f"{n_pairs}, {epoch}, {seed}")
    return np.random.default_rng([seed, epoch]).permutation(n_pairs)


def steps_per_epoch(n_pairs: int, batch_size: int, *, drop_remainder: bool = False) -> int:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return n_pairs // batch_size if drop_remainder else -(-n_pairs // batch_size)


def batch_indices(n_pairs: int, batch_size: int, epoch: int, step: int, seed: int, *,
                  drop_remainder: bool = False) -> np.ndarray:
    """Pair indices of batch `step` of `epoch`: a slice of `epoch_order`. The last batch of an
    epoch is shorter unless `drop_remainder` (then it is never produced)."""
    n_steps = steps_per_epoch(n_pairs, batch_size, drop_remainder=drop_remainder)
    if not 0 <= step < n_steps:
        raise ValueError(f"step must be in [0, {n_steps}) for {n_pairs} pairs in batches of "
                         f"{batch_size}, got {step}")
    return epoch_order(n_pairs, epoch, seed)[step * batch_size:(step + 1) * batch_size]
