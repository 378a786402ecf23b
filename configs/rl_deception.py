"""The paper's RL experiment: physical deception, MADDPG baselines, SOO fine-tuning, metrics.

python launch/rl.py --config configs/rl_deception.py [--config.stage=deceptive ...]
Values follow docs/paper_notes.md §5 and §5.2 (the authors' train.py defaults and README
commands).

The values are `soo_jax.rl.config.base_config()`'s.
"""

from ml_collections import ConfigDict

from soo_jax.rl import config as config_lib


def get_config() -> ConfigDict:
    return config_lib.base_config()
