"""SOO fine-tuning: `python launch/train.py --config configs/smollm2.py [--config.key=value ...]`.

Resumes automatically from the latest checkpoint in `train.out_dir`. On a TPU pod slice or a
multi-host GPU cluster every host runs this same command (see launch/tpu_pod.sh, launch/slurm.sbatch).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration file (configs/*.py).",
                                          lock_config=True)


def main(argv):
    del argv
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax and jax log every checkpoint step at INFO
    from soo_jax.train.loop import run_training

    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/smollm2.py")
    run_training(config, evaluate=_evaluator())


def _evaluator():
    def evaluate(model, tokenizer, config):
        from soo_jax.eval.quick import quick_before_after

        # base_model=None: the base is the tuned model with zeroed adapters (no second copy).
        return quick_before_after(None, model, tokenizer, config.eval, soo_layer=int(config.loss.layers[0]),
                                  soo_site=config.loss.site, n_scenarios=int(config.train.eval_scenarios))

    return evaluate


if __name__ == "__main__":
    app.run(main)
