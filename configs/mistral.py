"""Mistral-7B-Instruct-v0.2, the paper's arXiv recipe (paper_spec.md 1.1, appendix A.1.2):
SOO MSE at layer 19's o_proj, LoRA r=8 alpha=32 dropout=0.2 on q/v, lr 1e-4, 15 epochs, batch 4,
bf16, chat template. (The paper trained a 4-bit quantised base; we keep bf16.)"""

from soo_jax.train.config import base_config, finalize


def get_config():
    c = base_config()
    c.model.path = "/path/to/Mistral-7B-Instruct-v0.2"
    c.model.dtype = "bfloat16"
    c.loss.layers = (19,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = True
    c.train.epochs = 15
    c.train.batch_size = 4
    c.train.out_dir = "runs/mistral"
    c.optimizer.learning_rate = 1e-4
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    return finalize(c)
