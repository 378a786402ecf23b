"""A short MADDPG run learns: trained through the experiment driver on the tiny config, the
blue agent (honest reward: +5 per step near the goal) beats random policies by a wide margin
on every seed. Fixed seeds; no timing."""

import jax
import numpy as np

from configs import rl_tiny
from soo_jax.rl import config as config_lib
from soo_jax.rl import stages, training
from soo_jax.rl.env import PhysicalDeception
from soo_jax.rl.maddpg.core import init_agents
from soo_jax.rl.rollouts import make_evaluator

EPISODES, EVAL_EPISODES = 400, 100


def random_policy_blue_return(params, length, n_episodes=200):
    env = PhysicalDeception()

    def episode(key):
        k_reset, k_steps = jax.random.split(key)
        _, state = env.reset_env(k_reset, params)

        def step(state, k):
            action = jax.random.uniform(k, (2, 2), minval=-1, maxval=1)
            _, state, reward, _, _ = env.step_env(None, state, action, params)
            return state, reward

        return jax.lax.scan(step, state, jax.random.split(k_steps, length))[1].sum(0)

    returns = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(7), n_episodes))
    return float(returns[:, 1].mean())


def test_maddpg_beats_random_policies(tmp_path):
    config = rl_tiny.get_config()
    config.workdir = str(tmp_path)
    seeds = config.seeds  # shared with test_experiment's runs: one compile
    config.baseline.n_episodes = EPISODES
    config.checkpoint_every_chunks = 10_000
    config.log_every_chunks = 10_000
    training.run_training_stage(config, "honest", log=lambda *a: None)
    trained_agents = stages.load_agents(config, "honest")
    hyper, params = config_lib.maddpg_hyper(config), config_lib.env_params(config, "honest")
    untrained = jax.vmap(lambda k: init_agents(k, hyper))(
        stages.stage_keys(seeds, "honest"))
    evaluate = make_evaluator(hyper, 0.1)
    keys = jax.random.split(jax.random.PRNGKey(9), len(seeds) * EVAL_EPISODES)
    keys = keys.reshape(len(seeds), EVAL_EPISODES, -1)
    trained = np.asarray(evaluate(trained_agents, keys, params)["return"][..., 1].mean(1))
    before = np.asarray(evaluate(untrained, keys, params)["return"][..., 1].mean(1))
    random_return = random_policy_blue_return(params, config.env.episode_length)
    assert np.all(trained > 1.5 * random_return), (trained, random_return)
    assert trained.mean() > 2.5 * random_return, (trained, random_return)
    assert trained.mean() > 1.5 * before.mean(), (trained, before)
