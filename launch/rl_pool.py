"""Pools finished factorial evaluations on disjoint training seeds into one result.

python launch/rl_pool.py runs/rl_factorial runs/rl_factorial_replicate --out runs/rl_factorial_pooled

Each WORKDIR is a factorial workdir whose evaluation has finished (python launch/rl.py --config
configs/rl_factorial.py[:replicate]); they must share every setting but their seeds, and no seed
twice (soo_jax/rl/factorial_pool.py). Rerunning with the same inputs reports the pooling done;
--fresh moves an --out of other inputs aside.
"""

from soo_jax import cli

cli.starting("pooling factorial evaluations")

import pathlib  # noqa: E402

from absl import flags  # noqa: E402

flags.DEFINE_string("out", None, "Output directory for the pooled results.json, results.md and figure.")


def main(argv):
    workdirs = argv[1:]
    if len(workdirs) < 2:
        cli.fail("name two or more factorial workdirs, e.g. launch/rl_pool.py runs/rl_factorial "
                 "runs/rl_factorial_replicate --out runs/rl_factorial_pooled")
    if not flags.FLAGS.out:
        cli.fail("--out DIR is required (where the pooled results go)")
    from soo_jax import run_dir
    from soo_jax.rl import factorial_pool

    if flags.FLAGS.fresh:
        run_dir.start_fresh(pathlib.Path(flags.FLAGS.out))
    factorial_pool.run_pool(workdirs, flags.FLAGS.out)


if __name__ == "__main__":
    cli.run(main, config_required=False)
