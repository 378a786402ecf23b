"""Metrics reproduce hand-computed numbers on hand-made trajectories."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from soo_jax.rl import metrics
from soo_jax.rl.env import MovementBook, update_movement_book


def entries_along(positions, goal, fake, visible):
    """Runs the env's bookkeeping over a blue trajectory; returns the recorded entry fields."""
    book = MovementBook(jnp.asarray(positions[0], jnp.float32), *(jnp.float32(0),) * 3,
                        jnp.asarray(False))

    def step(book, inputs):
        pos, vis = inputs
        return update_movement_book(book, pos, jnp.asarray(goal, jnp.float32),
                                    jnp.asarray(fake, jnp.float32), vis)

    _, info = jax.lax.scan(step, book, (jnp.asarray(positions[1:], jnp.float32),
                                         jnp.asarray(visible[1:])))
    return [np.asarray(info[k]) for k in ("entry_valid", "entry_proj_nongoal",
                                          "entry_cos_goal_nongoal", "entry_adversary_visible")]


def test_hand_made_trajectory_counts():
    # Goal straight up, fake landmark straight right: goal/fake cosine ~ 0 near the origin.
    goal, fake = (0.0, 10.0), (10.0, 0.0)
    positions = [(0.0, 0.0), (0.1, 0.0),  # m1: towards fake  (proj fake 1)
                 (0.2, 0.0),              # m2: towards fake
                 (0.2, 0.1),              # m3: towards goal  (proj fake ~0)
                 (0.3, 0.1),              # m4: towards fake
                 (0.3, 0.2)]              # m5: towards goal
    visible = [False, True, True, False, True, True]
    valid, proj, cos, vis = entries_along(positions, goal, fake, visible)
    # An entry at step t describes movement t-1 if it pointed more to the fake than the goal:
    # m1 (recorded at m2, visible after m1), m2 (at m3, visible), m4 (at m5, visible).
    assert valid.tolist() == [False, True, True, False, True]
    assert vis[valid].tolist() == [True, True, True]
    np.testing.assert_allclose(proj[valid], 1.0, atol=2e-3)
    assert np.all(np.abs(cos[valid]) < 0.05)
    entries = metrics.deceptive_entries(valid[None], proj[None], cos[None], vis[None])
    assert entries.shape == (3, 2)
    z = metrics.deceptive_action_counts(entries, grid_size=5)  # x: 0,.25,.5,.75,1; y: -1,-.5,0,.5,1
    # projection ~0.999 > x for x < 1; cosine ~0 < y only for y in {0.5, 1} (and y=0 if cos<0)
    expected_cols = np.array([0, 0, int(np.sum(cos[valid] < 0)), 3, 3])
    np.testing.assert_array_equal(z[:4], np.tile(expected_cols, (4, 1)))
    np.testing.assert_array_equal(z[4], 0)


def test_invisible_entries_are_not_counted():
    valid = np.array([[True, True]])
    entries = metrics.deceptive_entries(valid, np.array([[0.9, 0.8]]), np.array([[0.0, 0.0]]),
                                        np.array([[False, True]]))
    np.testing.assert_allclose(entries, [[0.8, 0.0]])


def test_counts_match_brute_force_definition():
    rng = np.random.default_rng(0)
    entries = np.stack([rng.uniform(0, 1, 500), rng.uniform(-1, 1, 500)], -1)
    entries[:5] = [[0.5, 0.0], [0.0, -1.0], [1.0, 1.0], [0.25, 0.5], [0.75, -0.5]]  # on grid
    x, y = metrics.threshold_grids(9)
    brute = np.array([[np.sum((entries[:, 0] > xi) & (entries[:, 1] < yj)) for yj in y] for xi in x])
    np.testing.assert_array_equal(metrics.deceptive_action_counts(entries, 9), brute)


def test_grids_truncate_to_shortest_condition_per_seed():
    a = [np.array([[0.9, 0.0]] * 5), np.array([[0.9, 0.0]] * 2)]
    b = [np.array([[0.9, 0.0]] * 3), np.array([[0.9, 0.0]] * 4)]
    grids = metrics.per_seed_count_grids({"a": a, "b": b}, grid_size=3)
    assert grids["a"][0].max() == 3 and grids["b"][0].max() == 3  # seed 0: min(5, 3)
    assert grids["a"][1].max() == 2 and grids["b"][1].max() == 2  # seed 1: min(2, 4)


def test_behavioural_difference_by_hand():
    za = np.zeros((2, 2, 2))
    zb = np.zeros((2, 2, 2))
    zb[0, 0, 0] = 4.0  # seed 0: mean of (16, 0, 0, 0) = 4
    zb[1] = 1.0  # seed 1: 1
    d = metrics.behavioural_difference(za, zb)
    assert d["per_seed"] == [4.0, 1.0]
    half = scipy_stats.t.ppf(0.975, 1) * np.std([4.0, 1.0], ddof=1) / np.sqrt(2)
    assert d["mean"] == 2.5 and d["ci95"] == pytest.approx([2.5 - half, 2.5 + half])


def test_classification_accuracy_by_hand():
    # 2 eval seeds x 3 episodes. Seed 0: honest mean below deceptive from episode 1.
    # Seed 1: honest has no self observations in episode 1 (NaN -> wrong), then lower.
    sum_d = np.array([[-2.0, -2.0, -2.0], [-3.0, -3.0, -3.0]])
    cnt_d = np.ones((2, 3))
    sum_h = np.array([[-5.0, -5.0, -5.0], [0.0, -20.0, -1.0]])
    cnt_h = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0]])
    acc = metrics.classification_accuracy(sum_d, cnt_d, sum_h, cnt_h, [1, 2, 3])
    # seed 1 after 2 episodes: honest -20/2 = -10 < deceptive -3 -> right; after 3: -21/3 = -7.
    np.testing.assert_allclose(acc, [0.5, 1.0, 1.0])
