"""Ornstein-Uhlenbeck exploration noise and its linear scale schedule (maddpg-pytorch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ou_reset(shape, mu: float = 0.0) -> jax.Array:
    return jnp.full(shape, mu, jnp.float32)


def ou_advance(key, state, *, theta: float, sigma: float, mu: float, draws: int):
    """Advances the OU state `draws` times; returns (new state, unscaled noise of the last draw).

    The authors' `MADDPG.step` calls `agent.step` three times per env step (for h1, h2 and the
    action), so their noise process advances three times and the action sees the third sample.
    """
    for key_i in jax.random.split(key, draws):
        state = state + theta * (mu - state) + sigma * jax.random.normal(key_i, state.shape)
    return state, state


def noise_scale(episode, *, init_scale: float, final_scale: float, n_exploration_episodes: int):
    """final + (init - final) * max(0, n_expl - episode) / n_expl, per episode (0-based)."""
    remaining = jnp.maximum(0, n_exploration_episodes - episode) / n_exploration_episodes
    return final_scale + (init_scale - final_scale) * remaining
