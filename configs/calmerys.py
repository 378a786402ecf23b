"""CalmeRys-78B-Orpo-v0.1 (Qwen2-72B-shaped, 86 layers) on a TPU pod slice or a GPU cluster.

From the paper (docs/paper_notes.md §1.1; the paper's appendix A.1.1-A.1.2): SOO MSE at layer
57's o_proj, evaluation through the chat template, the answer suffix "Only respond with the room
name, no other text.". Not reported for CalmeRys, chosen here: Gemma-2's settings as in
`gemma2.py` (docs/paper_notes.md §6 item 2): LoRA r=4 alpha=8 dropout=0.1, lr 9e-4, 8 epochs,
batch 4, AdamW with the public code's eps 1e-6 and no gradient clipping; LoRA on q/v and the
chat template in training (the paper states both for Mistral only).

The mesh and remat come from the simulated scale plan in docs/scaling.md ("Recommendation"): on a
64-chip v5e slice this is 4 x 1 x 16 with remat per scanned layer, one pair per data shard (the
plan measured two, i.e. `--config.train.batch_size=8`: 12.2 GiB per chip estimated); on H100/H200
nodes use --config.mesh.tensor=8 (one NVLink domain).

Test set: our generator's burglar scenarios unless `--scenarios FILE` names the authors'
`false_recommendation_scenarios.json` (the paper's first 250; README "Evaluation" makes it).
"""

from soo_jax.data.templates import ARXIV_ANSWER_SUFFIX_BY_MODEL
from soo_jax.eval.config import base_run_config, finalize_run_config

MODEL = "calmerys-78b-orpo-v0.1"  # key of ARXIV_ANSWER_SUFFIX_BY_MODEL


def get_config():
    c = base_run_config()
    c.model.path = "/path/to/CalmeRys-78B-Orpo-v0.1"
    c.model.dtype = "bfloat16"
    c.loss.layers = (57,)  # the latent SOO's training site follows (link_latent_training_site)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 4, 8.0, 0.1
    c.data.chat_template = True
    c.train.epochs = 8
    c.train.batch_size = 4
    c.train.out_dir = "runs/calmerys"
    c.train.checkpoint_every = 20
    c.optimizer.learning_rate = 9e-4
    c.optimizer.eps, c.optimizer.max_grad_norm = 1e-6, 0.0  # the public code's AdamW, unclipped
    c.eval.answer_suffix = ARXIV_ANSWER_SUFFIX_BY_MODEL[MODEL]
    # docs/scaling.md, "Recommendation": the frozen weights over tensor, the small SOO batch over
    # data (fsdp would make every data x fsdp shard need a pair), remat per scanned layer.
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 16
    c.model.remat = "full"
    return finalize_run_config(c)
