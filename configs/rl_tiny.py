"""A seconds-long version of rl_deception.py for CI and smoke runs (same code paths)."""

from ml_collections import ConfigDict

from configs import rl_deception


def get_config() -> ConfigDict:
    config = rl_deception.get_config()
    config.workdir = "runs/rl_tiny"
    config.seeds = (155, 714)
    config.chunk_episodes = 4
    config.checkpoint_every_chunks = 2
    config.log_every_chunks = 1
    config.env.episode_length = 10
    config.maddpg.hidden_dim = 16
    config.maddpg.batch_size = 16
    config.maddpg.buffer_size = 200
    config.maddpg.steps_per_update = 20
    config.maddpg.n_exploration_episodes = 8
    config.baseline.n_episodes = 8
    config.finetune.n_episodes = 8
    config.evaluate.threshold_episodes = 6
    config.evaluate.grid_size = 11
    config.evaluate.classification_eval_seeds = 3
    config.evaluate.classification_episode_counts = (1, 2, 4)
    config.evaluate.episode_batch = 3
    return config
