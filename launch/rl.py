"""Runs the physical-deception RL experiment (or one stage of it).

python launch/rl.py --config configs/rl_deception.py
python launch/rl.py --config configs/rl_tiny.py --config.stage=deceptive --config.workdir=/tmp/x
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from soo_jax.rl import experiment  # noqa: E402
from soo_jax.rl.config import ConfigError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required, e.g. --config configs/rl_deception.py")
    try:
        experiment.run(config)
    except ConfigError as err:
        raise app.UsageError(str(err)) from err


def parse_flags(argv):
    """absl's parser, but an override of a key the config lacks gets a one-line message."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError, flags.Error) as err:
        bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        print(f"error: bad --config override among {bad}: {err}\n"
              "(overrides must name keys that exist in the config file)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
