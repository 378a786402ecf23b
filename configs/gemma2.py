"""Gemma-2-27b-it, the paper's recipe (appendix A.1.2 as transcribed): layer 20, LoRA r=4 alpha=8
dropout=0.1 on q/v, lr 9e-4, 8 epochs. Batch size is not reported; 4 as for Mistral."""

from soo_jax.train.config import base_config, finalize


def get_config():
    c = base_config()
    c.model.path = "/path/to/gemma-2-27b-it"
    c.model.dtype = "bfloat16"
    c.loss.layers = (20,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 4, 8.0, 0.1
    c.data.chat_template = True
    c.train.epochs = 8
    c.train.batch_size = 4
    c.train.out_dir = "runs/gemma2"
    c.optimizer.learning_rate = 9e-4
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return finalize(c)
