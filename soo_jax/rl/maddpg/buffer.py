"""Pure-functional replay buffer that samples like maddpg-pytorch's `ReplayBuffer`.

The write position and fill level are not stored: they follow from the global step count
(`position = t % capacity`, `size = min(t, capacity)`), which the training loop keeps outside
the per-seed state. That keeps them unbatched under `vmap` over seeds, so `lax.cond` on "is it
time to update" stays a real branch instead of becoming a select that runs the update always.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from soo_jax.rl.env import ACTION_DIM, MAX_OBS_DIM, NUM_AGENTS


@struct.dataclass
class CompensatedSum:
    """A float32 sum with a Neumaier compensation term (about twice float32's precision).

    Rewards are small integers, but the sum of squares over 1e6 of them passes 2**24, where
    plain float32 accumulation starts rounding.
    """

    total: jax.Array
    compensation: jax.Array

    @classmethod
    def zeros(cls, shape) -> "CompensatedSum":
        return cls(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))

    def add(self, x: jax.Array) -> "CompensatedSum":
        t = self.total + x
        lost = jnp.where(
            jnp.abs(self.total) >= jnp.abs(x), (self.total - t) + x, (x - t) + self.total
        )
        return CompensatedSum(t, self.compensation + lost)

    def value(self) -> jax.Array:
        return self.total + self.compensation


@struct.dataclass
class ReplayBuffer:
    obs: jax.Array  # (capacity, agents, MAX_OBS_DIM), padded like the env's observations
    actions: jax.Array  # (capacity, agents, ACTION_DIM), as stored (scaled, see config)
    rewards: jax.Array  # (capacity, agents)
    next_obs: jax.Array  # (capacity, agents, MAX_OBS_DIM)
    blue_pos: jax.Array  # (capacity, 2): blue agent's position when `obs` was taken (SOO)
    reward_sum: CompensatedSum  # (agents,) over the filled part
    reward_sq_sum: CompensatedSum
    # Rewards in the slot the *next* push overwrites. Reading the slot being written in the same
    # step made XLA copy the whole reward array every step (O(capacity)); reading the next slot
    # right after the write is free. Requires pushes at consecutive steps, as training does.
    next_overwritten: jax.Array  # (agents,)

    @property
    def capacity(self) -> int:
        return self.rewards.shape[0]


@struct.dataclass
class Batch:
    obs: jax.Array  # (batch, agents, MAX_OBS_DIM)
    actions: jax.Array
    rewards: jax.Array  # (batch, agents), normalised
    next_obs: jax.Array
    blue_pos: jax.Array
    index: jax.Array | None = None  # (batch,) the buffer slots sampled


def init_buffer(capacity: int) -> ReplayBuffer:
    def z(*shape):
        return jnp.zeros((capacity, *shape), jnp.float32)

    return ReplayBuffer(
        obs=z(NUM_AGENTS, MAX_OBS_DIM),
        actions=z(NUM_AGENTS, ACTION_DIM),
        rewards=z(NUM_AGENTS),
        next_obs=z(NUM_AGENTS, MAX_OBS_DIM),
        blue_pos=z(2),
        reward_sum=CompensatedSum.zeros((NUM_AGENTS,)),
        reward_sq_sum=CompensatedSum.zeros((NUM_AGENTS,)),
        next_overwritten=jnp.zeros((NUM_AGENTS,), jnp.float32),
    )


def push(buffer: ReplayBuffer, step: jax.Array, obs, actions, rewards, next_obs, blue_pos):
    """Writes one transition at global step `step` (0-based), overwriting the oldest when full.

    Unwritten slots hold zeros, so "add the new reward, remove the overwritten one" keeps the
    sums equal to sums over the filled part both before and after the buffer wraps.
    `lax.dynamic_update_index_in_dim`, not `.at[i].set`: the latter adds bounds masking.
    """
    i = step % buffer.capacity

    def put(array, value):
        return jax.lax.dynamic_update_index_in_dim(array, value.astype(array.dtype), i, 0)

    old = buffer.next_overwritten
    reward_array = put(buffer.rewards, rewards)
    next_overwritten = jax.lax.dynamic_index_in_dim(
        reward_array, (i + 1) % buffer.capacity, 0, keepdims=False
    )
    return buffer.replace(
        obs=put(buffer.obs, obs),
        actions=put(buffer.actions, actions),
        rewards=reward_array,
        next_obs=put(buffer.next_obs, next_obs),
        blue_pos=put(buffer.blue_pos, blue_pos),
        reward_sum=buffer.reward_sum.add(rewards).add(-old),
        reward_sq_sum=buffer.reward_sq_sum.add(rewards * rewards).add(-(old * old)),
        next_overwritten=next_overwritten,
    )


def sample_indices(key: jax.Array, population: jax.Array, k: int) -> jax.Array:
    """k distinct indices, uniformly over k-subsets of [0, population): Floyd's algorithm.

    Floyd: for j = n-k .. n-1 draw t_j ~ U{0..j}; insert t_j unless already chosen, else j.
    Step i collides iff t_i equals an earlier draw, or t_i is an earlier j_m (m = t_i - (n-k))
    whose step m itself collided (then j_m was inserted). That recursion points strictly
    backwards, so pointer doubling resolves it in log2(k) rounds: O(k log k), independent of n.
    """
    n = jnp.asarray(population, jnp.int32)
    positions = jnp.arange(k, dtype=jnp.int32)
    j = n - k + positions
    t = jax.random.randint(key, (k,), 0, j + 1, dtype=jnp.int32)
    # dup[i]: t_i equals some t_m with m < i (stable sort keeps equal values in draw order).
    order = jnp.argsort(t, stable=True)
    sorted_t = t[order]
    dup_sorted = jnp.concatenate([jnp.zeros(1, bool), sorted_t[1:] == sorted_t[:-1]])
    collided = jnp.zeros(k, bool).at[order].set(dup_sorted)
    m = t - (n - k)
    points_back = (m >= 0) & (m < positions)
    pointer = jnp.where(points_back, m, positions)
    for _ in range(max(1, (k - 1).bit_length())):
        collided = collided | collided[pointer]
        pointer = pointer[pointer]
    return jnp.where(collided, j, t)


def reward_stats(buffer: ReplayBuffer, size: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and population std (numpy's ddof=0) of each agent's rewards in the filled part.

    std^2 = E[r^2] - E[r]^2 over the same `size` entries as `rew_buffs[i][:filled_i]`.
    """
    n = jnp.maximum(size, 1).astype(jnp.float32)
    mean = buffer.reward_sum.value() / n
    var = jnp.maximum(buffer.reward_sq_sum.value() / n - mean * mean, 0.0)
    return mean, jnp.sqrt(var)


def sample(buffer: ReplayBuffer, key: jax.Array, size: jax.Array, batch_size: int) -> Batch:
    """A minibatch without replacement from the filled part, rewards normalised as the authors'.

    Rewards become (r - mean) / std over the filled buffer; left raw where that std is 0.
    """
    idx = sample_indices(key, size, batch_size)
    mean, std = reward_stats(buffer, size)
    raw = buffer.rewards[idx]
    rewards = jnp.where(std > 0, (raw - mean) / jnp.where(std > 0, std, 1.0), raw)
    return Batch(
        obs=buffer.obs[idx],
        actions=buffer.actions[idx],
        rewards=rewards,
        next_obs=buffer.next_obs[idx],
        blue_pos=buffer.blue_pos[idx],
        index=idx,
    )
