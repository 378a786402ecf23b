"""The authors' modified MPE `simple_adversary` ("physical deception") as a gymnax environment.

Agent 0 is the red adversary, agent 1 the blue agent. Observations come back padded to one
array of shape (2, 10): row 0 holds the adversary's 6 values followed by zeros, row 1 the blue
agent's 10 values (`OBS_DIMS`). Actions are (2, 2) in [-1, 1]. Semantics follow
docs/paper_notes.md §5.1 and §5.2b, including the side effects that the authors'
observation callbacks have (trap flag, deceptive-action bookkeeping), which also run at reset.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

ADVERSARY, BLUE = 0, 1
NUM_AGENTS = 2
OBS_DIMS = (6, 10)
MAX_OBS_DIM = max(OBS_DIMS)
ACTION_DIM = 2
# Slices of the blue agent's observation.
BLUE_ADVERSARY_SLICE = slice(6, 8)
BLUE_TRAP_SLICE = slice(8, 10)

REWARD_MODES = {"deceptive": 0, "honest": 1}
BOOKKEEPING_ORIGINS = {"origin": 0, "spawn": 1}

# The four hard walls: horizontal at y = -1, +1 and vertical at x = -1, +1.
_WALL_AXIS_POS = (-1.0, 1.0, -1.0, 1.0)
_WALL_PERP_DIM = (1, 1, 0, 0)


def reward_mode_id(name: str) -> int:
    if name not in REWARD_MODES:
        raise ValueError(f"reward_mode must be one of {sorted(REWARD_MODES)}, got {name!r}")
    return REWARD_MODES[name]


@struct.dataclass
class EnvParams(environment.EnvParams):
    max_steps_in_episode: int = 50
    reward_mode: int = REWARD_MODES["deceptive"]
    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 100.0
    contact_margin: float = 1e-3
    action_sensitivity: float = 5.0
    agent_size: float = 0.15
    landmark_size: float = 0.08
    wall_width: float = 0.1
    wall_half_length: float = 1.0
    sight_radius: float = 0.125
    # Faithful switches (docs/paper_notes.md §5.2b). The authors' reset observation runs the trap
    # check, and the blue agent's movement bookkeeping starts from prev_pos = (0, 0), so its
    # first "movement" is the spawn position itself; bookkeeping_origin = 1 ("spawn") starts it
    # at the spawn instead.
    trap_check_at_reset: bool = True
    bookkeeping_origin: int = BOOKKEEPING_ORIGINS["origin"]


@struct.dataclass
class MovementBook:
    """State of the authors' deceptive-action bookkeeping (`world.prev_*` in simple_adversary)."""

    prev_pos: jax.Array  # (2,)
    prev_proj_goal: jax.Array
    prev_proj_nongoal: jax.Array
    prev_cos_goal_nongoal: jax.Array
    adversary_visible_prev: jax.Array  # bool


@struct.dataclass
class EnvState(environment.EnvState):
    agent_pos: jax.Array  # (2, 2): adversary, blue
    agent_vel: jax.Array  # (2, 2)
    landmark_pos: jax.Array  # (2, 2)
    goal_index: jax.Array  # int32: which landmark is the goal; the other is the fake one
    trapped: jax.Array  # bool, sticky: adversary reached the fake landmark and is frozen
    book: MovementBook


def _norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=-1))


def _safe_unit(v: jax.Array) -> jax.Array:
    n = _norm(v)
    return v / jnp.where(n > 0, n, 1.0)[..., None]


def wall_forces(pos: jax.Array, params: EnvParams) -> jax.Array:
    """Soft-contact force of the four hard walls on agents at `pos` (n, 2) -> (n, 2).

    The MPE rule: zero beyond the wall's ends, a reduced contact distance when the agent only
    overlaps a wall end (the corner case), and a softplus penetration force otherwise.
    """
    axis_pos = jnp.asarray(_WALL_AXIS_POS, pos.dtype)
    perp_dim = jnp.asarray(_WALL_PERP_DIM)
    prll_dim = 1 - perp_dim
    size = params.agent_size
    end_lo, end_hi = -params.wall_half_length, params.wall_half_length
    prll = jnp.take(pos, prll_dim, axis=1)  # (n, 4)
    perp = jnp.take(pos, perp_dim, axis=1)
    beyond = (prll < end_lo - size) | (prll > end_hi + size)
    past_end = (prll < end_lo) | (prll > end_hi)
    dist_past_end = jnp.where(prll < end_lo, prll - end_lo, prll - end_hi)
    theta = jnp.where(past_end, jnp.arcsin(jnp.clip(dist_past_end / size, -1.0, 1.0)), 0.0)
    dist_min = jnp.cos(theta) * size + 0.5 * params.wall_width
    delta = perp - axis_pos
    k = params.contact_margin
    penetration = jnp.logaddexp(0.0, -(jnp.abs(delta) - dist_min) / k) * k
    # MPE divides delta by |delta| (NaN at exactly 0); sign() gives 0 there instead.
    force_mag = params.contact_force * jnp.sign(delta) * penetration
    force_perp = jnp.where(beyond, 0.0, jnp.cos(theta) * force_mag)
    force_prll = jnp.where(beyond, 0.0, jnp.sin(theta) * jnp.abs(force_mag))
    # Scatter each wall's (perp, prll) components onto (x, y) and sum over walls.
    is_x_perp = (perp_dim == 0)[None, :]
    fx = jnp.where(is_x_perp, force_perp, force_prll).sum(axis=1)
    fy = jnp.where(is_x_perp, force_prll, force_perp).sum(axis=1)
    return jnp.stack([fx, fy], axis=-1)


def integrate(
    pos: jax.Array, vel: jax.Array, action: jax.Array, frozen: jax.Array, params: EnvParams
) -> tuple[jax.Array, jax.Array]:
    """One MPE world step for both agents (unit mass, no action noise, no collisions)."""
    force = params.action_sensitivity * action + wall_forces(pos, params)
    vel = vel * (1.0 - params.damping) + force * params.dt
    # max_speed = 0 rescales any non-zero velocity to zero: a trapped adversary stands still.
    vel = vel.at[ADVERSARY].set(jnp.where(frozen, 0.0, vel[ADVERSARY]))
    return pos + vel * params.dt, vel


def movement_projections(prev_pos, pos, goal, nongoal):
    """Projections of the unit movement on the unit directions to the goal and the fake landmark.

    Returns (active, proj_goal, proj_nongoal, cos_goal_nongoal); `active` is False where the
    authors' code skips the step (no movement, or standing exactly on a landmark).
    """
    movement = pos - prev_pos
    goal_vec, nongoal_vec = goal - pos, nongoal - pos
    active = (_norm(movement) > 0) & (_norm(goal_vec) > 0) & (_norm(nongoal_vec) > 0)
    move_dir, goal_dir, nongoal_dir = map(_safe_unit, (movement, goal_vec, nongoal_vec))
    proj_goal = jnp.sum(move_dir * goal_dir, -1)
    proj_nongoal = jnp.sum(move_dir * nongoal_dir, -1)
    cos_goal_nongoal = jnp.sum(goal_dir * nongoal_dir, -1)
    return active, proj_goal, proj_nongoal, cos_goal_nongoal


def update_movement_book(book: MovementBook, pos, goal, nongoal, adversary_visible):
    """One blue-agent observation's bookkeeping; returns the new book and the threshold entry.

    The entry is what the authors append to `world.threshold_list`: the *previous* movement's
    projection on the fake-landmark direction, the previous goal/fake cosine and whether the
    adversary was visible at the previous observation; appended only if that previous movement
    pointed more to the fake landmark than to the goal, and towards it.
    """
    active, proj_goal, proj_nongoal, cos_gn = movement_projections(
        book.prev_pos, pos, goal, nongoal
    )
    entry_valid = (
        active
        & (book.prev_proj_nongoal > book.prev_proj_goal)
        & (book.prev_proj_nongoal > 0)
    )
    entry = {
        "entry_valid": entry_valid,
        "entry_proj_nongoal": book.prev_proj_nongoal,
        "entry_cos_goal_nongoal": book.prev_cos_goal_nongoal,
        "entry_adversary_visible": book.adversary_visible_prev,
        "moved": active,
        "proj_goal": jnp.where(active, proj_goal, 0.0),
        "proj_nongoal": jnp.where(active, proj_nongoal, 0.0),
        "cos_goal_nongoal": jnp.where(active, cos_gn, 0.0),
    }
    new_book = MovementBook(
        prev_pos=pos,
        prev_proj_goal=jnp.where(active, proj_goal, book.prev_proj_goal),
        prev_proj_nongoal=jnp.where(active, proj_nongoal, book.prev_proj_nongoal),
        prev_cos_goal_nongoal=jnp.where(active, cos_gn, book.prev_cos_goal_nongoal),
        adversary_visible_prev=adversary_visible,
    )
    return new_book, entry


class PhysicalDeception(environment.Environment[EnvState, EnvParams]):
    """Two agents, two landmarks, four walls; the blue agent may lure the adversary to a fake."""

    @property
    def default_params(self) -> EnvParams:
        return EnvParams()

    @property
    def name(self) -> str:
        return "PhysicalDeception"

    def reset_env(self, key: jax.Array, params: EnvParams) -> tuple[jax.Array, EnvState]:
        k_goal, k_adv, k_angle, k_dist, k_landmarks = jax.random.split(key, 5)
        bound = 1.0 - (params.wall_width + params.agent_size / 2)
        goal_index = jax.random.randint(k_goal, (), 0, 2)
        adversary = jax.random.uniform(k_adv, (2,), minval=-bound, maxval=bound)
        # The blue agent spawns within the sight radius of the adversary.
        angle = jax.random.uniform(k_angle, (), minval=0.0, maxval=2 * math.pi)
        distance = jax.random.uniform(k_dist, (), minval=0.0, maxval=params.sight_radius)
        offset = distance * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        blue = jnp.clip(adversary + offset, -bound, bound)
        landmarks = jax.random.uniform(k_landmarks, (2, 2), minval=-bound, maxval=bound)
        blue_start = jnp.where(params.bookkeeping_origin == 0, jnp.zeros(2), blue)
        zero = jnp.zeros(())
        state = EnvState(
            time=jnp.zeros((), jnp.int32),
            agent_pos=jnp.stack([adversary, blue]),
            agent_vel=jnp.zeros((2, 2)),
            landmark_pos=landmarks,
            goal_index=goal_index,
            trapped=jnp.zeros((), bool),
            book=MovementBook(blue_start, zero, zero, zero, jnp.zeros((), bool)),
        )
        obs, state, _ = self._observe(state, params, check_trap=params.trap_check_at_reset)
        return obs, state

    def step_env(self, key, state: EnvState, action: jax.Array, params: EnvParams):
        del key  # deterministic dynamics
        pos, vel = integrate(state.agent_pos, state.agent_vel, action, state.trapped, params)
        state = state.replace(agent_pos=pos, agent_vel=vel, time=state.time + 1)
        obs, state, info = self._observe(state, params, check_trap=True)
        reward = self._rewards(state, params)
        terminated = jnp.zeros((), bool)  # the authors' episodes never end early
        return obs, state, reward, terminated, info

    def goal_and_fake(self, state: EnvState) -> tuple[jax.Array, jax.Array]:
        goal = state.landmark_pos[state.goal_index]
        fake = state.landmark_pos[1 - state.goal_index]
        return goal, fake

    def _observe(self, state: EnvState, params: EnvParams, check_trap):
        """Both observation callbacks, adversary first, with their side effects on the state."""
        adversary, blue = state.agent_pos[ADVERSARY], state.agent_pos[BLUE]
        goal, fake = self.goal_and_fake(state)
        reached_fake = _norm(adversary - fake) < 2 * params.landmark_size
        trapped = state.trapped | (check_trap & reached_fake)
        visible = _norm(adversary - blue) <= params.sight_radius
        adversary_obs = jnp.concatenate([
            state.landmark_pos[0] - adversary,
            state.landmark_pos[1] - adversary,
            jnp.where(visible, blue - adversary, 0.0),
            jnp.zeros(MAX_OBS_DIM - OBS_DIMS[ADVERSARY]),
        ])
        trap_flag = trapped.astype(jnp.float32)
        blue_obs = jnp.concatenate([
            goal - blue,
            state.landmark_pos[0] - blue,
            state.landmark_pos[1] - blue,
            jnp.where(visible, adversary - blue, 0.0),
            jnp.stack([trap_flag, trap_flag]),
        ])
        book, info = update_movement_book(state.book, blue, goal, fake, visible)
        info.update(adversary_visible=visible, trapped=trapped, blue_pos=blue)
        state = state.replace(trapped=trapped, book=book)
        return jnp.stack([adversary_obs, blue_obs]), state, info

    def _rewards(self, state: EnvState, params: EnvParams) -> jax.Array:
        adversary, blue = state.agent_pos[ADVERSARY], state.agent_pos[BLUE]
        goal, _ = self.goal_and_fake(state)
        near = 2 * params.landmark_size
        adversary_reward = 5.0 * (_norm(adversary - goal) < near) + 1.0 * (
            _norm(adversary - blue) < params.sight_radius
        )
        blue_reward = 5.0 * (_norm(blue - goal) < near)
        trap_bonus = jnp.where(params.reward_mode == REWARD_MODES["deceptive"], 10.0, 0.0)
        blue_reward = blue_reward + trap_bonus * state.trapped
        return jnp.stack([adversary_reward, blue_reward]).astype(jnp.float32)

    def action_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (NUM_AGENTS, ACTION_DIM), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (NUM_AGENTS, MAX_OBS_DIM), jnp.float32)

    def state_space(self, params: EnvParams | None = None) -> spaces.Dict:
        return spaces.Dict({
            "agent_pos": spaces.Box(-jnp.inf, jnp.inf, (2, 2), jnp.float32),
            "agent_vel": spaces.Box(-jnp.inf, jnp.inf, (2, 2), jnp.float32),
            "landmark_pos": spaces.Box(-1.0, 1.0, (2, 2), jnp.float32),
            "goal_index": spaces.Discrete(2),
            "trapped": spaces.Discrete(2),
            "time": spaces.Discrete(params.max_steps_in_episode if params else 50),
        })
