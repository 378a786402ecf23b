"""CalmeRys-78B-Orpo-v0.1 (Qwen2-72B-shaped, 86 layers) on a TPU pod slice or a GPU cluster.

SOO layer 57 (paper). LoRA/optimizer settings for CalmeRys are not reported; Gemma's are used
(paper_spec.md section 6, item 2). The mesh comes from the simulated scale plan in
docs/scaling.md; on H100 clusters use --config.mesh.tensor=8 (one NVLink domain).
"""

from soo_jax.train.config import base_config, finalize


def get_config():
    c = base_config()
    c.model.path = "/path/to/CalmeRys-78B-Orpo-v0.1"
    c.model.dtype = "bfloat16"
    c.loss.layers = (57,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 4, 8.0, 0.1
    c.data.chat_template = True
    c.train.epochs = 8
    c.train.batch_size = 8
    c.train.out_dir = "runs/calmerys"
    c.train.checkpoint_every = 20
    c.optimizer.learning_rate = 9e-4
    # docs/scaling.md: tensor parallelism splits the frozen weights with no gathering; fsdp saves
    # nothing for a frozen base. On a 64-chip v5e slice this is 4 x 1 x 16, 2 pairs per data shard.
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 16
    return finalize(c)
