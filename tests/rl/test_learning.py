"""A short MADDPG run learns: the blue agent (honest reward: +5 per step near the goal)
beats random policies by a wide margin on every seed. Fixed seeds; no timing."""

import jax
import jax.numpy as jnp
import numpy as np

from soo_jax.rl.env import REWARD_MODES, EnvParams, PhysicalDeception
from soo_jax.rl.maddpg.core import MADDPGHyper
from soo_jax.rl.maddpg.train import init_train_state, make_train_chunk, unalias
from soo_jax.rl.rollouts import make_evaluator

LENGTH, EPISODES, SEEDS = 25, 400, 4
# Small and fast: more updates per step and a lower learning rate than the paper's, so that a
# few hundred episodes suffice; consistent action scaling and one OU draw per step.
HYPER = MADDPGHyper(lr=3e-3, hidden_dim=32, batch_size=64, buffer_size=20_000,
                    steps_per_update=4, episode_length=LENGTH, n_exploration_episodes=EPISODES,
                    ou_draws_per_step=1, buffer_action_scale=1.0)
PARAMS = EnvParams(max_steps_in_episode=LENGTH, reward_mode=REWARD_MODES["honest"])


def random_policy_blue_return(n_episodes=400):
    env = PhysicalDeception()

    def episode(key):
        k_reset, k_steps = jax.random.split(key)
        _, state = env.reset_env(k_reset, PARAMS)

        def step(state, k):
            action = jax.random.uniform(k, (2, 2), minval=-1, maxval=1)
            _, state, reward, _, _ = env.step_env(None, state, action, PARAMS)
            return state, reward

        return jax.lax.scan(step, state, jax.random.split(k_steps, LENGTH))[1].sum(0)

    returns = jax.jit(jax.vmap(episode))(jax.random.split(jax.random.PRNGKey(7), n_episodes))
    return float(returns[:, 1].mean())


def test_maddpg_beats_random_policies():
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    state = unalias(jax.vmap(lambda k: init_train_state(k, HYPER, PARAMS))(keys))
    untrained = unalias(state.agents)  # the chunk donates `state`
    state, _ = make_train_chunk(HYPER, PARAMS, EPISODES)(state, jnp.int32(0))
    evaluate = make_evaluator(HYPER, PARAMS, 0.1)
    eval_keys = jax.random.split(jax.random.PRNGKey(9), SEEDS * 200).reshape(SEEDS, 200, 2)
    trained = np.asarray(evaluate(state.agents, eval_keys)["return"][..., 1].mean(1))
    before = np.asarray(evaluate(untrained, eval_keys)["return"][..., 1].mean(1))
    random_return = random_policy_blue_return()
    assert np.all(trained > 1.5 * random_return), (trained, random_return)
    assert trained.mean() > 2.5 * random_return, (trained, random_return)
    assert trained.mean() > 1.5 * before.mean(), (trained, before)  # and over its own start
