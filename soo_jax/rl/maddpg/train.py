"""Whole training runs as compiled `lax.scan`s, `vmap`ped over seeds (purejaxrl style).

The authors update every `steps_per_update` env steps, a fixed schedule. So the timeline is a
scan over *segments*: `steps_per_update` env steps (episodes reset every `episode_length` steps,
inside the segment) followed by one update round. The update is unconditional code, not a
`lax.cond` inside the step loop: XLA copied the whole replay buffer into such a conditional at
every step, which made a step cost O(buffer). Until the buffer holds one batch the round is
computed and discarded (the authors skip it; the result is identical).

`make_train_chunk` compiles "n segments for every seed" into one function; the driver calls it
in a Python loop, carrying the full state, to print progress and checkpoint in between. The
global step index is an unbatched argument, so the buffer position and fill level are too.

An experiment adds its own optimizer step to each update round through `extra_actor_step`
(e.g. `soo_jax.rl.soo.SOOActorStep`): the algorithm knows nothing of what that step computes.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from soo_jax.rl.env import BLUE, OBS_DIMS, EnvParams, PhysicalDeception
from soo_jax.rl.maddpg import buffer as buffer_lib
from soo_jax.rl.maddpg.core import Agents, MADDPGHyper, act, init_agents, update_round
from soo_jax.rl.maddpg.networks import NetState
from soo_jax.rl.maddpg.noise import noise_scale, ou_advance, ou_reset


@struct.dataclass
class Rollout:
    """The part of the training state that lives only within episodes."""

    env_state: object
    obs: jax.Array
    ou: jax.Array  # (agents, action_dim) OU process state


@struct.dataclass
class LastStep:
    """What the authors' train.py has at hand at the last env step before an update."""

    blue_obs: jax.Array  # (10,) pre-step observation
    noise: jax.Array  # (2,) exploration noise added to the executed action
    post_pos: jax.Array  # (2,) blue position after the step (where the synthetic other goes)


# (agents, frozen reference policy, minibatch, key, LastStep) -> (agents, metrics): an extra
# optimizer step of an update round. Hashable (a frozen dataclass), as make_train_chunk's cache key.
ExtraActorStep = Callable


@struct.dataclass
class TrainState:
    agents: Agents
    buffer: buffer_lib.ReplayBuffer
    rollout: Rollout
    key: jax.Array
    reference: NetState | None = None  # frozen deceptive blue policy (SOO fine-tuning only)


def unalias(tree):
    """Gives every leaf its own device buffer (init shares e.g. policy and target arrays), which
    buffer donation requires."""
    return jax.tree.map(lambda x: jnp.array(x, copy=True), tree)


def _empty_rollout(env_params: EnvParams) -> Rollout:
    # Placeholder with the right structure; replaced by a reset at step 0 of the first episode.
    obs, env_state = PhysicalDeception().reset_env(jax.random.PRNGKey(0), env_params)
    return Rollout(env_state, obs, ou_reset((2, 2)))


def init_train_state(key: jax.Array, hyper: MADDPGHyper, env_params: EnvParams) -> TrainState:
    k_agents, k_run = jax.random.split(key)
    return TrainState(init_agents(k_agents, hyper), buffer_lib.init_buffer(hyper.buffer_size),
                      _empty_rollout(env_params), k_run)


# Folded into a fine-tuning stage's key for its fresh networks (init=scratch), so that the run
# key itself, hence every reset, noise draw and minibatch, is the one a baseline-init arm on the
# same stream uses.
SCRATCH_INIT_SALT = 7


def init_finetune_state(key: jax.Array, hyper: MADDPGHyper, env_params: EnvParams,
                        pretrained: Agents, from_scratch: bool = False) -> TrainState:
    """Starts from the deceptive baseline (all networks and optimizer states, as `--load`) with
    an empty buffer, and keeps its blue policy frozen as the capability reference.

    `from_scratch`: fresh networks instead, as the authors' README command (`--pre_trained`
    without `--load`) does; the reference is still the deceptive baseline's blue policy.
    """
    agents = init_agents(jax.random.fold_in(key, SCRATCH_INIT_SALT), hyper) if from_scratch else pretrained
    return TrainState(agents, buffer_lib.init_buffer(hyper.buffer_size),
                      _empty_rollout(env_params), key, reference=pretrained[BLUE].policy)


def check_schedule(hyper: MADDPGHyper, n_episodes: int) -> None:
    """A chunk must hold whole update segments."""
    steps = n_episodes * hyper.episode_length
    if steps % hyper.steps_per_update:
        raise ValueError(
            f"a chunk of {n_episodes} episodes x {hyper.episode_length} steps is not a multiple "
            f"of steps_per_update={hyper.steps_per_update}; change chunk_episodes"
        )


def make_env_step(hyper: MADDPGHyper):
    """One training env step, a `lax.scan` body: (env params, (agents, buffer, rollout),
    (global step t, key)) -> (carry, (outputs, LastStep)). Resets at episode starts, acts with
    scaled OU noise, steps the env and pushes the transition."""
    env = PhysicalDeception()
    length = hyper.episode_length

    def env_step(env_params, carry, inputs):
        agents, buffer, rollout = carry
        t, step_key = inputs  # t: global step index, unbatched
        k_reset, k_noise = jax.random.split(step_key)
        episode = t // length

        def reset(_):
            obs, env_state = env.reset_env(k_reset, env_params)
            return Rollout(env_state, obs, ou_reset(rollout.ou.shape, hyper.ou_mu))

        rollout = jax.lax.cond(t % length == 0, reset, lambda r: r, rollout)
        scale = noise_scale(episode, init_scale=hyper.init_noise_scale,
                            final_scale=hyper.final_noise_scale,
                            n_exploration_episodes=hyper.n_exploration_episodes)
        _, mu = act(hyper, agents, rollout.obs)
        ou, raw_noise = ou_advance(k_noise, rollout.ou, theta=hyper.ou_theta,
                                   sigma=hyper.ou_sigma, mu=hyper.ou_mu,
                                   draws=hyper.ou_draws_per_step)
        noise = raw_noise * scale
        action = jnp.clip(mu + noise, -1.0, 1.0)
        blue_pos = rollout.env_state.agent_pos[BLUE]
        next_obs, env_state, reward, _, info = env.step_env(
            None, rollout.env_state, action, env_params
        )
        buffer = buffer_lib.push(buffer, t, rollout.obs, action * hyper.buffer_action_scale,
                                 reward, next_obs, blue_pos)
        last = LastStep(rollout.obs[BLUE, : OBS_DIMS[BLUE]], noise[BLUE], info["blue_pos"])
        out = {"reward": reward, "trapped": info["trapped"]}
        return (agents, buffer, Rollout(env_state, next_obs, ou)), (out, last)

    return env_step


def make_segment_fn(hyper: MADDPGHyper, extra_actor_step: ExtraActorStep | None = None):
    """(state, first global step, env params) -> (state, outputs): `steps_per_update` steps,
    then one update round (with `extra_actor_step`, if given, after it)."""
    env_step = make_env_step(hyper)

    def segment(state: TrainState, first_step: jax.Array, env_params: EnvParams):
        key, k_steps, k_update = jax.random.split(state.key, 3)
        steps = first_step + jnp.arange(hyper.steps_per_update, dtype=jnp.int32)
        (agents, buffer, rollout), (outs, lasts) = jax.lax.scan(
            functools.partial(env_step, env_params), (state.agents, state.buffer, state.rollout),
            (steps, jax.random.split(k_steps, hyper.steps_per_update)),
        )
        size = jnp.minimum(steps[-1] + 1, hyper.buffer_size)
        extra = None
        if extra_actor_step is not None:
            last = jax.tree.map(lambda x: x[-1], lasts)

            def extra(agents_, batch, key_):
                return extra_actor_step(agents_, state.reference, batch, key_, last)

        # Floyd needs population >= batch; before that the round is discarded anyway.
        population = jnp.maximum(size, hyper.batch_size)
        updated, metrics, first_index = update_round(hyper, agents, buffer, k_update, population, extra)
        ready = size >= hyper.batch_size
        agents = jax.tree.map(lambda new, old: jnp.where(ready, new, old), updated, agents)
        metrics = {**metrics, "updated": ready}
        new_state = state.replace(agents=agents, buffer=buffer, rollout=rollout, key=key)
        return new_state, {"steps": outs, "update": metrics, "sampled_first_index": first_index}

    return segment


@functools.lru_cache(maxsize=16)
def make_train_chunk(hyper: MADDPGHyper, n_episodes: int, extra_actor_step: ExtraActorStep | None = None):
    """jit(vmap over seeds) of `n_episodes` episodes: (state, first global step, env params).

    The state is donated. Env params are a traced argument (both reward modes share a compile).
    Cached, so a resumed stage in the same process reuses the compiled function.
    Returns (state, outputs) with outputs["steps"] leaves shaped (seeds, n_episodes,
    episode_length, ...), outputs["update"] leaves (seeds, n_updates) and
    outputs["sampled_first_index"] (seeds, n_updates, agents): each minibatch's first buffer slot.
    """
    check_schedule(hyper, n_episodes)
    n_segments = n_episodes * hyper.episode_length // hyper.steps_per_update
    segment = make_segment_fn(hyper, extra_actor_step)

    def chunk(state: TrainState, first_step: jax.Array, env_params: EnvParams):
        starts = first_step + hyper.steps_per_update * jnp.arange(n_segments, dtype=jnp.int32)
        state, outs = jax.lax.scan(lambda st, t0: segment(st, t0, env_params), state, starts)
        steps = jax.tree.map(
            lambda x: x.reshape(n_episodes, hyper.episode_length, *x.shape[2:]), outs["steps"]
        )
        return state, {"steps": steps, "update": outs["update"],
                       "sampled_first_index": outs["sampled_first_index"]}

    return jax.jit(jax.vmap(chunk, in_axes=(0, None, None)), donate_argnums=0)


def episode_summary(outputs) -> dict:
    """Per-seed, per-episode returns and trap rate from a chunk's outputs (host numpy)."""
    steps = outputs["steps"]
    return {
        "return": steps["reward"].sum(axis=2),  # (seeds, episodes, agents)
        "trapped": steps["trapped"][:, :, -1],
    }
