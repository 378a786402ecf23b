"""A NumPy physical-deception step written from docs/paper_notes.md §5.1/§5.2b, independently of
the JAX code: plain per-agent, per-wall loops in the style of the original MPE. Used by the parity
tests, and by benchmarks/rl.py as the "loop" baseline."""

from __future__ import annotations

import dataclasses

import numpy as np

DT, DAMPING, CONTACT_FORCE, MARGIN = 0.1, 0.25, 100.0, 1e-3
SENSITIVITY, AGENT_SIZE, LANDMARK_SIZE, WALL_WIDTH = 5.0, 0.15, 0.08, 0.1
RADIUS = 2.5 * 0.05
# (orientation, axis position): H walls lie along x at y = axis, V walls along y at x = axis.
WALLS = [("H", -1.0), ("H", 1.0), ("V", -1.0), ("V", 1.0)]


@dataclasses.dataclass
class State:
    pos: np.ndarray  # (2, 2) adversary, blue
    vel: np.ndarray
    landmarks: np.ndarray  # (2, 2)
    goal: int
    trapped: bool
    prev_pos: np.ndarray
    prev_proj_goal: float = 0.0
    prev_proj_nongoal: float = 0.0
    prev_cos: float = 0.0
    adv_in_radius_prev: bool = False
    time: int = 0


def wall_force(p: np.ndarray, orient: str, axis_pos: float) -> np.ndarray:
    prll, perp = (0, 1) if orient == "H" else (1, 0)
    if p[prll] < -1 - AGENT_SIZE or p[prll] > 1 + AGENT_SIZE:
        return np.zeros(2)
    if p[prll] < -1 or p[prll] > 1:
        past = p[prll] - (-1 if p[prll] < -1 else 1)
        theta = np.arcsin(past / AGENT_SIZE)
        dist_min = np.cos(theta) * AGENT_SIZE + 0.5 * WALL_WIDTH
    else:
        theta = 0.0
        dist_min = AGENT_SIZE + 0.5 * WALL_WIDTH
    delta = p[perp] - axis_pos
    dist = abs(delta)
    penetration = np.logaddexp(0, -(dist - dist_min) / MARGIN) * MARGIN
    magnitude = CONTACT_FORCE * delta / dist * penetration
    f = np.zeros(2)
    f[perp] = np.cos(theta) * magnitude
    f[prll] = np.sin(theta) * abs(magnitude)
    return f


def observe(s: State, check_trap: bool = True):
    """Adversary then blue observation callback, with side effects. Returns obs, entry."""
    adv, blue = s.pos[0], s.pos[1]
    goal, fake = s.landmarks[s.goal], s.landmarks[1 - s.goal]
    if check_trap and np.linalg.norm(adv - fake) < 2 * LANDMARK_SIZE:
        s.trapped = True
    visible = np.linalg.norm(adv - blue) <= RADIUS
    adv_obs = np.concatenate([s.landmarks[0] - adv, s.landmarks[1] - adv,
                              blue - adv if visible else np.zeros(2)])
    entry = None
    movement = blue - s.prev_pos
    if np.linalg.norm(movement) > 0:
        gv, nv = goal - blue, fake - blue
        if np.linalg.norm(gv) > 0 and np.linalg.norm(nv) > 0:
            md = movement / np.linalg.norm(movement)
            gd, nd = gv / np.linalg.norm(gv), nv / np.linalg.norm(nv)
            cos_gn = gd @ nd
            pg, pn = md @ gd, md @ nd
            if s.prev_proj_nongoal > s.prev_proj_goal and s.prev_proj_nongoal > 0:
                entry = (s.prev_proj_nongoal, s.prev_cos, s.adv_in_radius_prev)
            s.prev_proj_goal, s.prev_proj_nongoal, s.prev_cos = pg, pn, cos_gn
    s.adv_in_radius_prev = bool(visible)
    s.prev_pos = blue.copy()
    flag = float(s.trapped)
    blue_obs = np.concatenate([goal - blue, s.landmarks[0] - blue, s.landmarks[1] - blue,
                               adv - blue if visible else np.zeros(2), [flag, flag]])
    return [adv_obs, blue_obs], entry, bool(visible)


def rewards(s: State, honest: bool) -> np.ndarray:
    adv, blue = s.pos[0], s.pos[1]
    goal = s.landmarks[s.goal]
    r_adv = 0.0
    if np.linalg.norm(adv - goal) < 2 * LANDMARK_SIZE:
        r_adv += 5
    if np.linalg.norm(adv - blue) < RADIUS:
        r_adv += 1
    r_blue = 0.0
    if np.linalg.norm(blue - goal) < 2 * LANDMARK_SIZE:
        r_blue += 5
    if s.trapped and not honest:
        r_blue += 10
    return np.array([r_adv, r_blue])


def step(s: State, actions: np.ndarray, honest: bool = False):
    """World step, then adversary (obs, reward), then blue (obs, reward)."""
    frozen = s.trapped
    for i in range(2):
        force = SENSITIVITY * actions[i]
        for orient, axis_pos in WALLS:
            force = force + wall_force(s.pos[i], orient, axis_pos)
        v = s.vel[i] * (1 - DAMPING) + force * DT
        if i == 0 and frozen:
            speed = np.sqrt(v[0] ** 2 + v[1] ** 2)
            if speed > 0:
                v = v / speed * 0.0
        s.vel[i] = v
        s.pos[i] = s.pos[i] + v * DT
    s.time += 1
    obs, entry, visible = observe(s)
    return obs, rewards(s, honest), entry, visible
