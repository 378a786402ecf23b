"""Replay buffer: sampling without replacement from the filled part, reward normalisation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soo_jax.rl.maddpg import buffer as buffer_lib


def sequential_floyd(t, n, k):
    chosen = []
    for i in range(k):
        j = n - k + i
        chosen.append(j if t[i] in chosen else int(t[i]))
    return chosen


@functools.partial(jax.jit, static_argnums=(2,))
def draws_and_sample(key, n, k):
    j = n - k + jnp.arange(k, dtype=jnp.int32)
    t = jax.random.randint(key, (k,), 0, j + 1, dtype=jnp.int32)
    return t, buffer_lib.sample_indices(key, n, k)


@pytest.mark.parametrize("n,k", [(5, 5), (12, 7), (40, 16), (1100, 1024)])
def test_sampling_is_floyds_algorithm_exactly(n, k):
    for seed in range(30):
        t, idx = draws_and_sample(jax.random.PRNGKey(seed), n, k)
        assert list(np.asarray(idx)) == sequential_floyd(np.asarray(t), n, k)
        assert len(set(np.asarray(idx).tolist())) == k
        assert idx.min() >= 0 and idx.max() < n


def test_sampling_is_uniform_over_subsets():
    n, k, trials = 6, 3, 12000
    sample = jax.jit(jax.vmap(lambda key: buffer_lib.sample_indices(key, n, k)))
    idx = np.sort(np.asarray(sample(jax.random.split(jax.random.PRNGKey(0), trials))), axis=1)
    assert all(len(set(row)) == k for row in idx[:200])
    subsets, counts = np.unique(idx, axis=0, return_counts=True)
    assert len(subsets) == 20  # C(6, 3)
    expected = trials / 20
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 43.8  # chi-square 19 dof, p = 0.001


def fill(capacity, rewards):
    buf = buffer_lib.init_buffer(capacity)
    push = jax.jit(buffer_lib.push)
    for t, r in enumerate(rewards):
        v = jnp.full((2, 10), float(t))
        buf = push(buf, jnp.int32(t), v, jnp.zeros((2, 2)), jnp.asarray(r, jnp.float32), v,
                   jnp.zeros(2))
    return buf


def test_sample_comes_from_filled_part_only():
    buf = fill(50, np.ones((20, 2)))
    batch = buffer_lib.sample(buf, jax.random.PRNGKey(1), jnp.int32(20), 20)
    # obs hold the step index: a full-size sample is exactly the 20 filled slots.
    assert sorted(np.asarray(batch.obs[:, 0, 0]).tolist()) == list(range(20))


def test_reward_normalisation_matches_numpy_population_std_after_wraparound():
    rng = np.random.default_rng(0)
    capacity, steps = 64, 150  # wraps twice; sums must track only the live entries
    rewards = rng.choice([0.0, 1.0, 5.0, 6.0, 15.0], size=(steps, 2)) + rng.normal(0, 0.1, (steps, 2))
    buf = fill(capacity, rewards)
    live = rewards[-capacity:]
    mean, std = buffer_lib.reward_stats(buf, jnp.int32(capacity))
    np.testing.assert_allclose(mean, live.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, live.std(0), rtol=1e-5)
    batch = buffer_lib.sample(buf, jax.random.PRNGKey(2), jnp.int32(capacity), 16)
    step = np.asarray(batch.obs[:, 0, 0]).astype(int)  # which step each sample came from
    np.testing.assert_allclose(batch.rewards, (rewards[step] - live.mean(0)) / live.std(0),
                               rtol=1e-4, atol=1e-5)


def test_sums_stay_exact_for_integer_rewards_beyond_float32_precision():
    # 2e5 rewards of 15: the squared sum 4.5e7 is past 2**24, where float32 adding loses units.
    buf = buffer_lib.init_buffer(4)
    s = buf.reward_sq_sum
    add = jax.jit(lambda s: jax.lax.fori_loop(0, 200_000, lambda i, s: s.add(jnp.float32(225.0)), s))
    assert float(add(s).value()[0]) == 225.0 * 200_000


def test_constant_rewards_are_left_raw():
    buf = fill(16, np.full((10, 2), 5.0))
    batch = buffer_lib.sample(buf, jax.random.PRNGKey(3), jnp.int32(10), 4)
    np.testing.assert_array_equal(batch.rewards, 5.0)
