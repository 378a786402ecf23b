"""The sweep presets, `launch/sweep.py --preset NAME`: named grids of config overrides for
soo_jax.experiments.sweep (which trains each point and applies the selection rule).

Each grid point is a list of `key=value` overrides of the run config given with --config
(configs/smollm2.py for both presets here).
"""

from __future__ import annotations

from soo_jax.data.templates import ARXIV_MISTRAL_ANSWER_SUFFIX

# SmolLM2-135M-Instruct has 30 layers; the paper's SOO layers sit at 43-66% depth. The README's
# sweep: four depths (20-80%) at the paper's learning rate and at 10x.
SMOLLM2_LAYERS = (6, 12, 18, 24)
SMOLLM2_RATES = (0.0001, 0.001)
# The training prompts as user turns of the chat template, as the paper trained (A.1.2).
CHAT_TRAINING = ["data.chat_template=True"]
# The public code's objective as it counts (docs/paper_notes.md §1.2): KL(P_other || P_self)
# summed over every position of prompts left-padded to exactly 128 tokens, pads included, per pair.
PUBLIC_CODE_KL = ["loss.objective=kl_logits", "loss.kl_mask_padding=False", "data.max_length=128",
                  "data.pad_to_multiple_of=128"]
# The paper's suffix for Mistral-7B (arXiv A.1.1), the model whose recipe configs/smollm2.py
# borrows; the default is the public code's (no period).
PAPER_SUFFIX = [f"eval.answer_suffix={ARXIV_MISTRAL_ANSWER_SUFFIX}"]


def _layer_and_rate(layer: int, rate: float) -> list[str]:
    return [f"loss.layers=({layer},)", f"optimizer.learning_rate={rate}"]


def smollm2_grid() -> list[list[str]]:
    """The README's sweep: 4 layers x 2 learning rates, raw training prompts, the MSE objective,
    the public code's suffix (8 points)."""
    return [_layer_and_rate(layer, rate) for layer in SMOLLM2_LAYERS for rate in SMOLLM2_RATES]


def smollm2_recipes_grid() -> list[list[str]]:
    """The README's sweep extended with the paper's and the public code's recipe choices:
    training formatting {raw, chat template} x objective {o_proj MSE, the public code's KL on
    logits} x answer suffix {the public code's, the paper's}, at the swept layers and rates.

    The full product is 2 x 2 x 2 x (4 layers x 2 rates) = 64 points; trimmed to 24, 16 of them
    new, 6 new trainings:
    - the README's 8 points come first, unchanged (a rerun into the same --out reuses them);
    - the new points use lr 1e-4 only: every 1e-3 point of the README's sweep broke the KL bound
      of the selection rule (1.67-2.22 nats against 0.5) and three of four stopped answering,
      so 10x is kept only where it was already measured;
    - the KL objective does not use a layer (it compares the output distributions), so its
      points vary formatting and suffix only, not the four layers (latent SOO is still reported
      at configs/smollm2.py's layer 12);
    - the suffix only changes how the held-out scenarios are asked, so a paper-suffix point
      reuses the training of its public-suffix twin, and is compared with the base model asked
      with the same suffix.
    Everything else is configs/smollm2.py's (15 epochs, batch 4, LoRA r 8 / alpha 32 / dropout
    0.2, AdamW with clipping at norm 1.0; evaluation through the chat template), so each new
    point differs from a README point only in the axes named. Order: MSE points (raw + paper
    suffix, chat + public suffix, chat + paper suffix; layers 6..24 each), then the 4 KL points.
    """
    rate = SMOLLM2_RATES[0]
    grid = smollm2_grid()
    variants = [([], PAPER_SUFFIX), (CHAT_TRAINING, []), (CHAT_TRAINING, PAPER_SUFFIX)]
    for formatting, suffix in variants:
        grid += [_layer_and_rate(layer, rate) + formatting + suffix for layer in SMOLLM2_LAYERS]
    for formatting, suffix in [([], [])] + variants:
        grid.append(PUBLIC_CODE_KL + [f"optimizer.learning_rate={rate}"] + formatting + suffix)
    return grid


PRESETS: dict[str, list[list[str]]] = {
    "smollm2": smollm2_grid(),
    "smollm2_recipes": smollm2_recipes_grid(),
}
