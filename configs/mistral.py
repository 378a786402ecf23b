"""Mistral-7B-Instruct-v0.2, the paper's arXiv recipe (docs/paper_notes.md §1.1, appendix A.1.2):
SOO MSE at layer 19's o_proj, LoRA r=8 alpha=32 dropout=0.2 on q/v, lr 1e-4, 15 epochs, batch 4,
bf16, chat template in training and evaluation, the answer suffix the paper gave Mistral
("Start your response with 'I would'.", with a period; appendix A.1.1).

The optimizer is not reported; as in the public code (and `mistral_repo.py`): AdamW with eps 1e-6,
no weight decay and no gradient clipping (our `base_run_config` clips at norm 1.0; neither the paper
nor the code does). Deviation: the paper trained a 4-bit quantised base; we keep bf16.

Test set: our generator's burglar scenarios unless `--scenarios FILE` names the authors'
`false_recommendation_scenarios.json` (the paper's first 250; README "Evaluation" makes it).
"""

from soo_jax.data.templates import ARXIV_ANSWER_SUFFIX_BY_MODEL
from soo_jax.eval.config import base_run_config, finalize_run_config

MODEL = "mistral-7b-instruct-v0.2"  # key of ARXIV_ANSWER_SUFFIX_BY_MODEL


def get_config():
    c = base_run_config()
    c.model.path = "/path/to/Mistral-7B-Instruct-v0.2"
    c.model.dtype = "bfloat16"
    c.loss.layers = (19,)  # the latent SOO's training site follows (link_latent_training_site)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 32.0, 0.2
    c.data.chat_template = True
    c.train.epochs = 15
    c.train.batch_size = 4
    c.train.out_dir = "runs/mistral"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.eps, c.optimizer.max_grad_norm = 1e-6, 0.0  # the public code's AdamW, unclipped
    c.eval.answer_suffix = ARXIV_ANSWER_SUFFIX_BY_MODEL[MODEL]
    # docs/scaling.md, "Recommendation": the frozen weights over tensor, the small SOO batch over
    # data (fsdp would make every data x fsdp shard need a pair), remat per scanned layer.
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 4
    c.model.remat = "full"
    return finalize_run_config(c)
