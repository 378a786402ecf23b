"""SOO fine-tuning of the embedded default model, SmolLM2-135M-Instruct, on a laptop CPU.

30 layers. The SOO layer (12) and the learning rate (1e-4) come from the sweep documented in
README.md ("First real result"), which varied only those two; LoRA r=8 alpha=32 dropout=0.2,
15 epochs and batch 4 are the paper's Mistral settings, not swept. Training prompts are raw
text, as the public code trained, while the evaluation renders its prompts through the chat
template (the eval default, as the paper evaluated): a mix of the public code (raw/raw) and the
paper (chat/chat), chosen, not swept. The sweep preset `smollm2_recipes`
(soo_jax/experiments/sweep.py) tries chat-template training, the public code's KL objective and the
paper's answer suffix at these and the other swept layers.
"""

from soo_jax.eval.config import base_run_config, finalize_run_config


def get_config():
    c = base_run_config()
    c.model.path = "embedded"
    c.loss.layers = (12,)  # the latent SOO's training site follows (link_latent_training_site)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = False  # raw SOO prompts, as the public code trained (not swept)
    c.train.epochs = 15
    c.train.batch_size = 4
    c.train.out_dir = "runs/smollm2"
    c.train.checkpoint_every = 60
    c.optimizer.learning_rate = 1e-4
    return finalize_run_config(c)
