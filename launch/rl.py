"""Runs the physical-deception RL experiment (or one stage of it).

python launch/rl.py --config configs/rl_deception.py
python launch/rl.py --config configs/rl_tiny.py --config.stage=deceptive --config.workdir=/tmp/x

Finished stages are skipped and an interrupted one resumes; a stage whose settings changed is
refused (naming each key) unless --fresh moves the old workdir aside. SIGINT/SIGTERM save the
current chunk and exit; rerun the same command to resume.
"""

from soo_jax import cli

cli.starting("physical-deception RL experiment")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    from soo_jax.rl import experiment

    experiment.run(_CONFIG.value, fresh=flags.FLAGS.fresh)


if __name__ == "__main__":
    cli.run(main)
