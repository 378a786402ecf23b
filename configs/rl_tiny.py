"""A one-minute version of rl_deception.py for CI and smoke runs (same code paths; the time is mostly compilation).

Small networks, frequent updates and a lower learning rate, so that the learning check in
tests/rl/test_learning.py (400 episodes of this config) learns; the consistent variants of the
authors' two quirks (one OU draw per step, unscaled actions in the buffer).

The values are `soo_jax.rl.config.tiny_config()`'s.
"""

from ml_collections import ConfigDict

from soo_jax.rl import config as config_lib


def get_config() -> ConfigDict:
    return config_lib.tiny_config()
