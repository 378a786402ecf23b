"""Hyperparameter sweep for SOO fine-tuning, scored on held-out scenarios (never the test split).

    python launch/sweep.py --config configs/smollm2.py --out runs/sweep \
        --point "loss.layers=(6,)" --point "loss.layers=(12,);optimizer.learning_rate=1e-3" ...
    python launch/sweep.py --config configs/smollm2.py --preset smollm2   # the README's sweep
    python launch/sweep.py --config configs/smollm2.py --preset smollm2_recipes  # + formatting,
        # objective and answer suffix (the grid and how it was trimmed: configs/sweeps.py)

Each --point is one grid point: ';'-separated config overrides. Resumable: finished points are
reused. Writes OUT/sweep.json and OUT/sweep.md (selection rule in soo_jax/experiments/sweep.py).
"""

import importlib.util
import pathlib

from soo_jax import cli

cli.starting("SOO hyperparameter sweep")

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

# The presets are experiment data beside the run configs, loaded by path as config files are.
PRESETS_FILE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "sweeps.py"


def _load_presets() -> dict[str, list[list[str]]]:
    spec = importlib.util.spec_from_file_location("_sweep_presets", PRESETS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PRESETS


PRESETS = _load_presets()

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run configuration file (configs/*.py).",
                                          lock_config=True)
flags.DEFINE_multi_string("point", [], "One grid point: ';'-separated key=value config overrides.")
flags.DEFINE_enum("preset", None, sorted(PRESETS), "A predefined grid (configs/sweeps.py).")
flags.DEFINE_string("out", "runs/sweep", "Output directory (resumes).")
flags.DEFINE_integer("n_scenarios", 100, "Held-out burglar scenarios per point (each asked in both room orders).")
flags.DEFINE_string("scenarios", "", "The authors' scenario file: its tuples are kept out of the held-out set.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.out.strip():
        cli.fail("--out: must name an output directory, got ''")
    from soo_jax.experiments.sweep import run_sweep

    config = _CONFIG.value
    grid = [[o.strip() for o in p.split(";") if o.strip()] for p in FLAGS.point]
    grid += PRESETS[FLAGS.preset] if FLAGS.preset else []
    if not grid:
        cli.fail("give --point KEY=VALUE;... or --preset NAME")
    summary = run_sweep(config, grid, pathlib.Path(FLAGS.out).absolute(), n_scenarios=FLAGS.n_scenarios,
                        authors_file=FLAGS.scenarios, fresh=FLAGS.fresh)
    from soo_jax.experiments.sweep import sweep_table

    print(sweep_table(summary))


if __name__ == "__main__":
    cli.run(main)
