"""Mistral-7B-Instruct-v0.2, the authors' public code (`soo_fine_tune.py`, `evaluate_deception.py`;
docs/paper_notes.md §1.2 and §3.1.3), the version behind 95.2% -> 15.9% deceptive:

- objective: KL(P_other || P_self) between the output distributions, summed over positions and
  vocabulary and divided by the pairs of the batch (`F.kl_div(..., reduction="batchmean")`),
  over all 128 positions, padding included: every prompt is left-padded to exactly 128 tokens
  (`padding="max_length", max_length=128`) with EOS as the pad token (our loader's choice too,
  Mistral having no pad token), and no mask enters the sum;
- raw prompts (no chat template) in training and evaluation, the code's answer suffix (no period);
- LoRA r=8 alpha=32 dropout=0.2 on q/v (PEFT's default targets for Mistral);
- AdamW (transformers' own): lr 5e-5, eps 1e-6, no weight decay, no schedule, no clipping;
- 20 epochs of batches of 4 pairs with gradient accumulation 4 and the loss not divided by 4:
  here batch 16 = 4 microbatches of 4 whose gradients are summed. The code zeroed the gradient at
  each epoch's start, so of its 13 batches per epoch the 13th was discarded: 3 optimizer steps
  per epoch, 60 in all, as our schedule's dropped remainder (52 pairs // 16) gives.

Deviations, because they cannot or should not be copied: a bf16 base instead of 4-bit NF4 with
fp16 autocast (the code's GradScaler skipped its first steps on overflow, which kept its loss
flat at 52.135 for 3-4 epochs); optax's AdamW adds eps to the bias-corrected sqrt(v), while
transformers' AdamW adds it before the bias correction (in optax's terms an eps of 3e-5 at
step 1, 4e-6 at step 60; it matters only for gradients of that size or smaller); our seeded shuffles instead of torch's (`SEEDS` are the
code's seeds, for `launch/experiment.py --seeds`, not a way to draw its batches); the pad rows'
logits are those of transformers' eager attention (a pad query attends to nothing, so softmax is
uniform over all keys; SDPA would differ). `loss.layers` is unused by this objective; it places
the latent SOO's o_proj "training site" at layer 19, the arXiv recipe's, for comparison.

Test set: our generator's burglar scenarios unless `--scenarios FILE` names the authors'
`false_recommendation_scenarios.json` (the public code's first 250; README "Evaluation" makes it).
"""

from soo_jax.data.templates import REPO_ANSWER_SUFFIX
from soo_jax.eval.config import base_run_config, finalize_run_config

SEEDS = (276, 809, 609, 802, 792)  # the public code's (fine_tune_model.ipynb)
PAD_TO = 128  # soo_fine_tune.py: padding="max_length", max_length=128


def get_config():
    c = base_run_config()
    c.model.path = "/path/to/Mistral-7B-Instruct-v0.2"
    c.model.dtype = "bfloat16"
    c.loss.objective = "kl_logits"
    c.loss.kl_mask_padding = False
    c.loss.microbatch_reduction = "sum"
    c.loss.layers = (19,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = False
    c.data.max_length = c.data.pad_to_multiple_of = PAD_TO
    c.train.epochs = 20
    c.train.batch_size, c.train.grad_accum = 16, 4
    c.train.out_dir = "runs/mistral_repo"
    c.optimizer.learning_rate = 5e-5
    c.optimizer.eps, c.optimizer.max_grad_norm, c.optimizer.weight_decay = 1e-6, 0.0, 0.0
    c.eval.chat_template = False
    c.eval.answer_suffix = REPO_ANSWER_SUFFIX
    # docs/scaling.md, "Recommendation" (as configs/mistral.py).
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 4
    c.model.remat = "full"
    return finalize_run_config(c)
