"""The controlled SOO experiment (SOO, LM control, mismatched pairs, matched perturbation), resumable.

    python launch/controlled.py --config configs/smollm2.py:controlled \
        --scenarios false_recommendation_scenarios.json --out runs/llm_controlled \
        [--seeds 100,101,...] [--arms soo,lm,mismatched,perturbation] [--nosecondary] [--screen_only]
        [--record docs/results/data/llm_controlled]
        [--config.key=value ...]
    python launch/controlled.py --report_from docs/results/data/llm_controlled   # tables from the data

Writes OUT/results.md, OUT/results.json and OUT/per_seed.csv after every seed (interim) and at
the end; see soo_jax/experiments/controlled.py for the layout. A rerun resumes; one with other
result-changing settings is refused naming each key, unless --fresh moves the old OUT aside.
"""

import pathlib
import sys

from soo_jax import cli

cli.starting("controlled SOO experiment")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# The registered experiment's seeds (docs/results/llm_preregistration.md).
REGISTERED_SEEDS = ",".join(str(s) for s in range(100, 116))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration file (configs/*.py).",
                                          lock_config=True)
flags.DEFINE_string("seeds", REGISTERED_SEEDS, "Comma-separated fine-tuning seeds.")
flags.DEFINE_string("arms", "soo,lm,mismatched,perturbation", "Comma-separated arms (soo always included).")
flags.DEFINE_string("scenarios", "", "The authors' false_recommendation_scenarios.json (test set and screen).")
flags.DEFINE_string("out", "runs/llm_controlled", "Output directory (resumes if it has results).")
flags.DEFINE_bool("secondary", True, "After each seed's primary stage, generate answers for the secondary endpoints.")
flags.DEFINE_string("record", "", "A directory kept beyond --out (e.g. docs/results/data/llm_controlled, committed): "
                    "seeds complete there are taken from it, each finished seed is added to it.")
flags.DEFINE_bool("screen_only", False, "Only the screen: the base model's forced choice on the selection set.")
flags.DEFINE_string("report_from", "", "Print the report recomputed from DIR/per_seed.csv, screen.json and plan.json "
                    "(an experiment's --out or docs/results/data/llm_controlled) and exit; runs nothing.")
FLAGS = flags.FLAGS


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        cli.fail(f"--{flag}: {text!r} is not a comma-separated list of integers")


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    from soo_jax.eval.runtime import tqdm_progress
    from soo_jax.experiments.controlled import ControlledPlan, report_from_dir, run_controlled

    if FLAGS.report_from:
        directory = pathlib.Path(FLAGS.report_from)
        if not (directory / "per_seed.csv").is_file():
            cli.fail(f"--report_from {directory}: no per_seed.csv there (an experiment's --out holds one)")
        print(report_from_dir(directory))
        return
    config = _CONFIG.value
    if config is None:
        cli.fail("--config FILE is required, e.g. --config configs/smollm2.py:controlled")
    plan = ControlledPlan(seeds=_ints("seeds", FLAGS.seeds), arms=tuple(a.strip() for a in FLAGS.arms.split(",")
                                                                         if a.strip()),
                          scenarios_file=FLAGS.scenarios, out_dir=pathlib.Path(FLAGS.out).absolute(),
                          secondary=FLAGS.secondary, screen_only=FLAGS.screen_only,
                          record=pathlib.Path(FLAGS.record).absolute() if FLAGS.record else None)
    run_controlled(config, plan, progress=tqdm_progress(config.eval.progress), fresh=FLAGS.fresh)
    print((plan.out_dir / "results.md").read_text())
    print(f"results: {plan.out_dir / 'results.md'}, {plan.out_dir / 'results.json'}, {plan.out_dir / 'per_seed.csv'}",
          file=sys.stderr)


if __name__ == "__main__":
    # --report_from reads finished data and needs no config.
    cli.run(main, config_required="--report_from" not in " ".join(sys.argv) or "--config" in " ".join(sys.argv))
