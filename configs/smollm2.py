"""SOO fine-tuning of the embedded default model, SmolLM2-135M-Instruct, on a laptop CPU.

30 layers; the SOO layer, LoRA and optimizer settings come from the sweep documented in
README.md ("First real result").
"""

from soo_jax.train.config import base_config, finalize


def get_config():
    c = base_config()
    c.model.path = "embedded"
    c.loss.layers = (12,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = False  # raw SOO prompts, as the public code trained (swept so)
    c.train.epochs = 15
    c.train.batch_size = 4
    c.train.out_dir = "runs/smollm2"
    c.train.checkpoint_every = 60
    c.optimizer.learning_rate = 1e-4
    c.eval.latent.soo_layer = 12  # report latent SOO at the training site
    return finalize(c)
