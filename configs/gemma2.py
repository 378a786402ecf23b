"""Gemma-2-27b-it, the paper's recipe where it gives one (appendix A.1.2 as transcribed,
docs/paper_notes.md §1.1): SOO MSE at layer 20's o_proj, LoRA r=4 alpha=8 dropout=0.1, lr 9e-4,
8 epochs, and the answer suffix the paper gave Gemma-2-27b-it and CalmeRys ("Only respond with
the room name, no other text."; appendix A.1.1).

Not reported for Gemma-2, chosen here: LoRA on q/v and the chat template in training (the
paper states both for Mistral only; its evaluation applies chat templates, docs/paper_notes.md
§3.1.3); batch 4 (Mistral's, the only batch size the paper gives); AdamW with
the public code's eps 1e-6, no weight decay and no gradient clipping (neither the paper nor the
code clips; our `base_run_config` would clip at norm 1.0). Gemma-2-it ends its turns with
<end_of_turn>, listed only in generation_config.json; `soo_jax.models.generate.eos_token_ids`
stops every generation there.

Test set: our generator's burglar scenarios unless `--scenarios FILE` names the authors'
`false_recommendation_scenarios.json` (the paper's first 250; README "Evaluation" makes it).
"""

from soo_jax.data.templates import ARXIV_ANSWER_SUFFIX_BY_MODEL
from soo_jax.eval.config import base_run_config, finalize_run_config

MODEL = "gemma-2-27b-it"  # key of ARXIV_ANSWER_SUFFIX_BY_MODEL


def get_config():
    c = base_run_config()
    c.model.path = "/path/to/gemma-2-27b-it"
    c.model.dtype = "bfloat16"
    c.loss.layers = (20,)  # the latent SOO's training site follows (link_latent_training_site)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 4, 8.0, 0.1
    c.data.chat_template = True
    c.train.epochs = 8
    c.train.batch_size = 4
    c.train.out_dir = "runs/gemma2"
    c.optimizer.learning_rate = 9e-4
    c.optimizer.eps, c.optimizer.max_grad_norm = 1e-6, 0.0  # the public code's AdamW, unclipped
    c.eval.answer_suffix = ARXIV_ANSWER_SUFFIX_BY_MODEL[MODEL]
    # docs/scaling.md, "Recommendation": the frozen weights over tensor, the small SOO batch over
    # data (fsdp would make every data x fsdp shard need a pair), remat per scanned layer.
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = -1, 1, 16
    c.model.remat = "full"
    return finalize_run_config(c)
