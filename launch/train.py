"""SOO fine-tuning: `python launch/train.py --config configs/smollm2.py [--config.key=value ...]`.

Resumes from the latest checkpoint in `train.out_dir` when the result-changing settings are the
same, and refuses (naming each differing key) when they are not; `--fresh` moves an old run
aside first. SIGINT/SIGTERM save a checkpoint at the current step and exit; rerun to resume. On
a TPU pod slice or a multi-host GPU cluster every host runs this same command (see
launch/tpu_pod.sh, launch/slurm.sbatch).
"""

from soo_jax import cli

cli.starting("SOO fine-tuning")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration file (configs/*.py).",
                                          lock_config=True)
_RESUME_FROM_PREVIOUS = flags.DEFINE_bool(
    "resume_from_previous", False, "If the latest checkpoint cannot be read, move it aside and resume from the "
    "newest step that can (never done silently).")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    from soo_jax.eval.config import validate as validate_eval
    from soo_jax.models.embedded import use_compilation_cache
    from soo_jax.train import config as run_config
    from soo_jax.train.loop import run_training

    run_config.validate(_CONFIG.value)  # (run_training checks again; cheap)
    validate_eval(_CONFIG.value.eval)  # the end-of-run evaluation's settings, before anything runs
    # A rerun (or a resume) skips the train step's and the before/after check's compilations.
    use_compilation_cache(_CONFIG.value.eval.compilation_cache_dir)
    run_training(_CONFIG.value, evaluate=_evaluator(), fresh=flags.FLAGS.fresh,
                 resume_from_previous=_RESUME_FROM_PREVIOUS.value)


def _evaluator():
    def evaluate(model, tokenizer, config):
        from soo_jax.eval.quick import quick_before_after
        from soo_jax.eval.runtime import tqdm_progress

        # base_model=None: the base is the tuned model with zeroed adapters (no second copy).
        return quick_before_after(None, model, tokenizer, config.eval, soo_layer=int(config.loss.layers[0]),
                                  soo_site=config.loss.site, n_scenarios=int(config.train.eval_scenarios),
                                  progress=tqdm_progress(bool(config.eval.progress)))

    return evaluate


if __name__ == "__main__":
    cli.run(main)
