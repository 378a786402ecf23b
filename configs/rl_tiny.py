"""A one-minute version of rl_deception.py for CI and smoke runs (same code paths; the time is mostly compilation).

Small networks, frequent updates and a lower learning rate, so that the learning check in
tests/rl/test_learning.py (400 episodes of this config) learns; the consistent variants of the
authors' two quirks (one OU draw per step, unscaled actions in the buffer).
"""

from ml_collections import ConfigDict

from configs import rl_deception


def get_config() -> ConfigDict:
    config = rl_deception.get_config()
    config.workdir = "runs/rl_tiny"
    config.seeds = (0, 1, 2, 3)
    config.chunk_episodes = 4
    config.checkpoint_every_chunks = 2
    config.log_every_chunks = 1
    config.env.episode_length = 25
    config.maddpg.lr = 3e-3
    config.maddpg.hidden_dim = 32
    config.maddpg.batch_size = 64
    config.maddpg.buffer_size = 20_000
    config.maddpg.steps_per_update = 2
    config.maddpg.n_exploration_episodes = 400
    config.maddpg.ou_draws_per_step = 1
    config.maddpg.buffer_action_scale = 1.0
    config.baseline.n_episodes = 8
    config.finetune.n_episodes = 8
    config.evaluate.threshold_episodes = 6
    config.evaluate.grid_size = 11
    config.evaluate.classification_eval_seeds = 3
    config.evaluate.classification_episode_counts = (1, 2, 4)
    config.evaluate.episode_batch = 3
    return config
