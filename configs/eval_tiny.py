"""A seconds-long evaluation for tests and smoke runs: few scenarios, few new tokens.

Set the model on the command line: `--config.model.path=DIR` (a tiny checkpoint the test
writes, or any Hugging Face model directory).
"""
import ml_collections

from soo_jax.eval.config import default_eval_config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"path": "embedded", "dtype": "float32"})
    config.eval = default_eval_config()
    config.eval.num_scenarios = 3
    config.eval.max_new_tokens = 6
    # One batch per generation call: each model compiles one shape per prompt width.
    config.eval.batch_size = 32
    config.eval.progress = False
    config.eval.latent.batch_size = 8
    config.eval.capability.categories = "facts"
    config.eval.capability.answer_max_new_tokens = 6
    config.eval.capability.batch_size = 8
    config.eval.capability.mtbench_max_new_tokens = 6
    return config
