"""The JAX environment against the NumPy reference (float32, stated tolerance), plus jit/vmap,
reset bounds and auto-reset."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import rl_reference as ref
from soo_jax.rl.env import (
    EnvParams, EnvState, MovementBook, PhysicalDeception, REWARD_MODES,
)

# float32 JAX vs float64 NumPy: positions move by <= 0.1 * |v| per step.
ATOL = 2e-5
ENV = PhysicalDeception()
STEP = jax.jit(ENV.step_env)  # one compile for all cases (reward mode is a traced leaf)


def to_jax(s: ref.State) -> EnvState:
    f = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    return EnvState(
        time=jnp.int32(s.time), agent_pos=f(s.pos), agent_vel=f(s.vel), landmark_pos=f(s.landmarks),
        goal_index=jnp.int32(s.goal), trapped=jnp.asarray(s.trapped),
        book=MovementBook(f(s.prev_pos), f(s.prev_proj_goal), f(s.prev_proj_nongoal),
                          f(s.prev_cos), jnp.asarray(s.adv_in_radius_prev)),
    )


def make_state(adv, blue, l0, l1, goal=0, trapped=False, vel=None, prev_pos=None, **book):
    return ref.State(
        pos=np.array([adv, blue], float), vel=np.zeros((2, 2)) if vel is None else np.array(vel, float),
        landmarks=np.array([l0, l1], float), goal=goal, trapped=trapped,
        prev_pos=np.array(blue, float) - 0.01 if prev_pos is None else np.array(prev_pos, float),
        **book,
    )


# Injected situations: walls, corners, past a wall's end, trap, visibility and reward boundaries.
CASES = {
    "open_field": make_state([0.1, 0.2], [-0.3, 0.4], [0.5, -0.5], [-0.6, -0.2]),
    "near_top_wall": make_state([0.0, 0.86], [0.2, -0.85], [0.5, 0.5], [-0.5, 0.5],
                                vel=[[0.3, 0.9], [0.0, -0.8]]),
    "corner": make_state([0.84, 0.85], [-0.86, -0.84], [0.0, 0.0], [0.3, 0.3],
                         vel=[[0.5, 0.5], [-0.5, -0.5]]),
    "past_wall_end": make_state([1.05, 0.95], [-1.1, -0.9], [0.0, 0.0], [0.3, 0.3]),
    "trap_just_inside": make_state([0.3, 0.0], [0.0, 0.0], [0.0, 0.5], [0.3 + 0.159, 0.0]),
    "trap_just_outside": make_state([0.3, 0.0], [0.0, 0.0], [0.0, 0.5], [0.3 + 0.17, 0.0],
                                    goal=0),
    "already_trapped_moving": make_state([0.3, 0.0], [0.25, 0.05], [0.0, 0.5], [0.35, 0.0],
                                         trapped=True, vel=[[0.4, -0.2], [0.1, 0.1]]),
    "visible_just_inside": make_state([0.0, 0.0], [0.1245, 0.0], [0.5, 0.5], [-0.5, -0.5]),
    "visible_just_outside": make_state([0.0, 0.0], [0.1255, 0.0], [0.5, 0.5], [-0.5, -0.5]),
    "both_at_goal": make_state([0.5, 0.5], [0.52, 0.45], [0.5, 0.48], [-0.5, -0.5], goal=0),
    "moving_to_fake": make_state([0.0, 0.0], [0.05, 0.0], [0.0, 0.8], [0.8, 0.0], goal=0,
                                 prev_pos=[0.0, 0.0], prev_proj_goal=0.1, prev_proj_nongoal=0.9,
                                 prev_cos=0.05, adv_in_radius_prev=True),
}


def run_both(s: ref.State, actions: np.ndarray, mode: str):
    params = EnvParams(reward_mode=REWARD_MODES[mode])
    obs, state, reward, terminated, info = STEP(
        None, to_jax(s), jnp.asarray(actions, jnp.float32), params
    )
    s_np = copy.deepcopy(s)
    obs_np, reward_np, entry, visible = ref.step(s_np, actions, honest=(mode == "honest"))
    return (obs, state, reward, terminated, info), (s_np, obs_np, reward_np, entry, visible)


def assert_step_matches(jax_out, ref_out):
    (obs, state, reward, terminated, info), (s_np, obs_np, reward_np, entry, visible) = (
        jax_out, ref_out)
    np.testing.assert_allclose(state.agent_pos, s_np.pos, atol=ATOL)
    np.testing.assert_allclose(state.agent_vel, s_np.vel, atol=ATOL * 10)
    np.testing.assert_allclose(obs[0, :6], obs_np[0], atol=ATOL)
    np.testing.assert_array_equal(obs[0, 6:], 0.0)
    np.testing.assert_allclose(obs[1], obs_np[1], atol=ATOL)
    np.testing.assert_array_equal(reward, reward_np)
    assert bool(state.trapped) == s_np.trapped
    assert bool(info["adversary_visible"]) == visible
    assert not bool(terminated)
    assert bool(info["entry_valid"]) == (entry is not None)
    if entry is not None:
        np.testing.assert_allclose(info["entry_proj_nongoal"], entry[0], atol=ATOL)
        np.testing.assert_allclose(info["entry_cos_goal_nongoal"], entry[1], atol=ATOL)
        assert bool(info["entry_adversary_visible"]) == entry[2]
    np.testing.assert_allclose(state.book.prev_proj_nongoal, s_np.prev_proj_nongoal, atol=1e-4)
    np.testing.assert_allclose(state.book.prev_cos_goal_nongoal, s_np.prev_cos, atol=1e-4)


@pytest.mark.parametrize("mode", ["deceptive", "honest"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_matches_numpy_reference(case, mode):
    actions = np.array([[0.7, -0.4], [-0.9, 0.3]])
    assert_step_matches(*run_both(CASES[case], actions, mode))


def test_injected_cases_cover_what_they_claim():
    # Guards the fixtures themselves: each boundary case lands on its side of the boundary.
    actions = np.zeros((2, 2))
    _, (s, _, r, _, vis) = run_both(CASES["trap_just_inside"], actions, "deceptive")
    assert s.trapped and r[1] == 10
    _, (s, _, r, _, _) = run_both(CASES["trap_just_outside"], actions, "deceptive")
    assert not s.trapped
    assert run_both(CASES["visible_just_inside"], actions, "deceptive")[1][4]
    assert not run_both(CASES["visible_just_outside"], actions, "deceptive")[1][4]
    _, (s, _, r, _, _) = run_both(CASES["both_at_goal"], actions, "honest")
    assert r[0] >= 5 and r[1] == 5
    _, (s, _, _, entry, _) = run_both(CASES["moving_to_fake"], np.array([[0, 0], [1.0, 0]]),
                                      "deceptive")
    assert entry is not None and entry[0] == pytest.approx(0.9)
    f = ref.wall_force(np.array([1.05, 0.95]), "H", 1.0)
    assert f[0] != 0 and f[1] != 0, "past-wall-end case must exercise the corner branch"


def test_trapped_adversary_stays_frozen_over_many_steps():
    s = CASES["already_trapped_moving"]
    state = to_jax(s)
    params = EnvParams()
    step = STEP
    start = np.asarray(state.agent_pos[0])
    for _ in range(5):
        _, state, reward, _, _ = step(None, state, jnp.ones((2, 2)), params)
        assert reward[1] >= 10
    np.testing.assert_array_equal(state.agent_pos[0], start)


def test_multi_step_trajectory_matches_reference():
    rng = np.random.default_rng(0)
    s = copy.deepcopy(CASES["open_field"])
    state = to_jax(s)
    step = STEP
    n_entries = 0
    for _ in range(40):
        actions = rng.uniform(-1, 1, (2, 2))
        _, state, reward, _, info = step(None, state, jnp.asarray(actions, jnp.float32), EnvParams())
        _, reward_np, entry, _ = ref.step(s, actions)
        np.testing.assert_allclose(state.agent_pos, s.pos, atol=1e-4)
        np.testing.assert_array_equal(reward, reward_np)
        assert bool(info["entry_valid"]) == (entry is not None)
        n_entries += entry is not None
    assert n_entries > 0


def test_jit_and_vmap_match_unbatched_step():
    keys = jax.random.split(jax.random.PRNGKey(1), 16)
    params = EnvParams()
    _, states = jax.vmap(ENV.reset_env, in_axes=(0, None))(keys, params)
    actions = jax.random.uniform(jax.random.PRNGKey(2), (16, 2, 2), minval=-1, maxval=1)
    batched = jax.jit(jax.vmap(ENV.step_env, in_axes=(None, 0, 0, None)))(None, states, actions, params)
    host_states = jax.tree.map(np.asarray, states)
    for i in range(16):
        state_i = jax.tree.map(lambda x: x[i], host_states)
        single = STEP(None, state_i, actions[i], params)
        jax.tree.map(lambda b, s: np.testing.assert_allclose(b[i], s, atol=1e-6), batched, single)


def test_reset_within_spec_bounds():
    params = EnvParams()
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    obs, states = jax.jit(jax.vmap(ENV.reset_env, in_axes=(0, None)))(keys, params)
    bound = 1 - (0.1 + 0.15 / 2)
    pos = np.asarray(states.agent_pos)
    assert np.all(np.abs(pos) <= bound + 1e-6)
    assert np.all(np.abs(states.landmark_pos) <= bound + 1e-6)
    assert np.all(np.linalg.norm(pos[:, 0] - pos[:, 1], axis=-1) <= 0.125 + 1e-6)
    assert np.all(states.agent_vel == 0) and np.all(states.time == 0)
    goal = np.asarray(states.goal_index)
    assert set(np.unique(goal)) == {0, 1} and 0.45 < goal.mean() < 0.55
    # Spread, not a constant: adversary covers the box, blue offsets cover the disc.
    assert pos[:, 0].min() < -0.7 and pos[:, 0].max() > 0.7
    # The trap check runs at reset (faithful), and the flag shows in the blue observation.
    fake = np.asarray(states.landmark_pos)[np.arange(4000), 1 - goal]
    expect_trap = np.linalg.norm(pos[:, 0] - fake, axis=-1) < 0.16
    assert expect_trap.any()
    np.testing.assert_array_equal(states.trapped, expect_trap)
    np.testing.assert_array_equal(obs[:, 1, 8], expect_trap.astype(np.float32))


def test_bookkeeping_origin_switch():
    key = jax.random.PRNGKey(4)
    reset = jax.jit(ENV.reset_env)
    _, faithful = reset(key, EnvParams(bookkeeping_origin=0))
    _, spawn = reset(key, EnvParams(bookkeeping_origin=1))
    blue = np.asarray(faithful.agent_pos[1])
    # Faithful: the reset "movement" is p0 - (0, 0), so the reset sets prev projections.
    assert float(faithful.book.prev_proj_goal) != 0 or float(faithful.book.prev_proj_nongoal) != 0
    assert spawn.book.prev_proj_goal == 0 and spawn.book.prev_proj_nongoal == 0
    np.testing.assert_allclose(spawn.book.prev_pos, blue)


def test_auto_reset_after_episode_length():
    params = EnvParams(max_steps_in_episode=3)
    obs, state = ENV.reset(jax.random.PRNGKey(5), params)
    step = jax.jit(ENV.step, static_argnums=())
    for t in range(3):
        obs, state, reward, terminated, truncated, info = step(jax.random.PRNGKey(10 + t), state,
                                                               jnp.zeros((2, 2)), params)
        assert bool(truncated) == (t == 2) and not bool(terminated)
    assert int(state.time) == 0  # reset happened
    assert ENV.observation_space(params).shape == obs.shape == (2, 10)
    assert ENV.action_space(params).contains(jnp.zeros((2, 2)))
