"""The multi-seed SOO experiment (base, honesty prompt, SOO over seeds), resumable.

    python launch/experiment.py --config configs/smollm2.py --seeds 0,1,2,3,4 \
        --sets authors,generated --scenarios ../shared/reference/false_recommendation_scenarios.json \
        --out runs/experiment [--adapters_from runs/other_experiment] [--config.eval.suites=main] \
        [--config.key=value ...]

Writes OUT/results.json and OUT/results.md (see soo_jax/experiments/experiment.py for the layout). A
rerun resumes; one with other result-changing settings is refused naming each key, unless
--fresh moves the old OUT aside.
"""

import pathlib
import sys

from soo_jax import cli

cli.starting("multi-seed SOO experiment")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration file (configs/*.py).",
                                          lock_config=True)
flags.DEFINE_string("seeds", "0,1,2,3,4", "Comma-separated SOO fine-tuning seeds.")
flags.DEFINE_string("sets", "authors,generated", "Scenario sets: authors (needs --scenarios), generated.")
flags.DEFINE_string("scenarios", "", "The authors' false_recommendation_scenarios.json.")
flags.DEFINE_string("out", "runs/experiment", "Output directory (resumes if it has results).")
flags.DEFINE_string("adapters_from", "", "Another experiment's output directory whose seed_<s>/train/adapter "
                    "to evaluate instead of training again.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out.strip():
        cli.fail("--out: must name an output directory, got ''")
    from soo_jax.experiments.experiment import ExperimentPlan, run_experiment
    from soo_jax.eval.runtime import tqdm_progress

    config = _CONFIG.value
    try:
        seeds = tuple(int(s) for s in FLAGS.seeds.split(",") if s.strip())
    except ValueError:
        cli.fail(f"--seeds: must be comma-separated integers >= 0 such as 0,1,2, got {FLAGS.seeds!r}")
    plan = ExperimentPlan(seeds=seeds,
                          sets=tuple(s.strip() for s in FLAGS.sets.split(",") if s.strip()),
                          scenarios_file=FLAGS.scenarios, out_dir=pathlib.Path(FLAGS.out).absolute(),
                          adapters_from=pathlib.Path(FLAGS.adapters_from).absolute() if FLAGS.adapters_from else None)
    aggregate = run_experiment(config, plan, progress=tqdm_progress(config.eval.progress), fresh=FLAGS.fresh)
    from soo_jax.experiments.experiment import markdown_table

    print(markdown_table(aggregate))
    print(f"results: {plan.out_dir / 'results.json'}, {plan.out_dir / 'results.md'} "
          f"({aggregate['meta']['wall_time_s'] / 60:.1f} min)", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
