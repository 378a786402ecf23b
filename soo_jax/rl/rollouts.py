"""Deterministic evaluation rollouts (no exploration noise, policies in eval mode), vmapped over
seeds and episodes; every episode is independent, so an evaluation is `episode_length`
sequential steps however many episodes it has."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from soo_jax.rl.env import BLUE, OBS_DIMS, EnvParams, PhysicalDeception
from soo_jax.rl.maddpg.core import Agents, MADDPGHyper, act
from soo_jax.rl.soo import soo_values


def make_episode_eval(hyper: MADDPGHyper, soo_radius: float):
    """(agents, key, env params) -> per-step records of one deterministic episode.

    SOO as `evaluate-deception.py`: at steps whose pre-step blue observation has the adversary
    out of sight, log-MSE between concat(h1, h2) on that observation and on a copy with a
    synthetic adversary placed within `soo_radius` of the *post*-step position.
    """
    env = PhysicalDeception()

    def episode(agents: Agents, key: jax.Array, env_params: EnvParams):
        k_reset, k_steps = jax.random.split(key)
        obs, env_state = env.reset_env(k_reset, env_params)

        def step(carry, step_key):
            env_state, obs = carry
            hidden, actions = act(hyper, agents, obs)
            next_obs, env_state, reward, _, info = env.step_env(None, env_state, actions, env_params)
            blue_obs = obs[BLUE, : OBS_DIMS[BLUE]]
            value, valid = soo_values(hyper, agents[BLUE].policy, step_key, blue_obs[None],
                                      info["blue_pos"][None], soo_radius)
            record = {
                "reward": reward,
                "entry_valid": info["entry_valid"],
                "entry_proj_nongoal": info["entry_proj_nongoal"],
                "entry_cos_goal_nongoal": info["entry_cos_goal_nongoal"],
                "entry_adversary_visible": info["entry_adversary_visible"],
                "trapped": info["trapped"],
                "soo_value": jnp.where(valid[0], value[0], 0.0),
                "soo_valid": valid[0],
            }
            return (env_state, next_obs), record

        _, records = jax.lax.scan(step, (env_state, obs),
                                  jax.random.split(k_steps, hyper.episode_length))
        return records

    return episode


@functools.lru_cache(maxsize=8)
def make_evaluator(hyper: MADDPGHyper, soo_radius: float):
    """jit: (agents stacked over seeds, keys (seeds, episodes, 2), env params) -> per-episode
    summaries.

    Returns leaves shaped (seeds, episodes, ...): threshold-list entries per step, SOO value
    sums and counts, returns, trap flag at the end.
    """
    episode = make_episode_eval(hyper, soo_radius)

    def summarise(records):
        return {
            "entry_valid": records["entry_valid"],
            "entry_proj_nongoal": records["entry_proj_nongoal"],
            "entry_cos_goal_nongoal": records["entry_cos_goal_nongoal"],
            "entry_adversary_visible": records["entry_adversary_visible"],
            "soo_sum": records["soo_value"].sum(),
            "soo_count": records["soo_valid"].sum(),
            "return": records["reward"].sum(0),
            "trapped": records["trapped"][-1],
        }

    per_episode = lambda agents, key, params: summarise(episode(agents, key, params))  # noqa: E731
    per_seed = jax.vmap(per_episode, in_axes=(None, 0, None))
    return jax.jit(jax.vmap(per_seed, in_axes=(0, 0, None)))
