"""Self-other overlap for the blue agent's policy (docs/paper_notes.md §5.3, §5.4, §5.6).

"Self" observation: the adversary is out of sight (obs[6:8] == 0). "Other" observation: the
same observation with a synthetic adversary inserted within the sight radius. SOO compares the
policy's hidden activations concat(h1, h2) on the two (the authors' evaluation scripts), or its
actions (`soo_target="action"`, the branch their train.py runs); fine-tuning adds a capability
term that keeps the blue agent's actions close to the frozen deceptive baseline's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from soo_jax.checks import field_flag, field_number
from soo_jax.rl.env import BLUE, BLUE_ADVERSARY_SLICE, BLUE_TRAP_SLICE, OBS_DIMS
from soo_jax.rl.maddpg.buffer import Batch
from soo_jax.rl.maddpg.core import Agents, MADDPGHyper
from soo_jax.rl.maddpg.networks import NetState, apply_eval
from soo_jax.rl.maddpg.train import LastStep

LOG_EPS = 1e-25  # the authors' epsilon inside log(mse + eps)
SOO_MODES = ("minibatch", "last_step")
SOO_TARGETS = ("hidden", "action")


@dataclasses.dataclass(frozen=True)
class SOOConfig:
    """Loss on the blue actor: soo_weight*SOO + capability_weight*capability + random_weight*R.

    R = log(U^10 + eps) is the authors' "random" control: a random scalar carrying no gradient.
    `mode="minibatch"` computes the terms on the blue agent's sampled minibatch (recommended,
    docs/paper_notes.md §6 item 16); `mode="last_step"` on the last env step before the update,
    as train.py does.
    `soo_target="hidden"` compares concat(h1, h2) of the blue policy on the self and the other
    observation (the paper's "activations"); `"action"` compares its deterministic actions, as
    the authors' train.py `self_other_overlap` does (its hidden-layer line is commented out).
    """

    soo_weight: float = 1.0
    capability_weight: float = 1.0
    random_weight: float = 0.0
    log_mse: bool = False  # True: the authors' log(MSE + 1e-25) for both terms
    mode: str = "minibatch"  # or "last_step" (the authors' train.py)
    sight_radius: float = 0.125
    position_clip: float = 0.9  # train.py clips the synthetic adversary to [-1 + 0.1, 1 - 0.1]
    # What the SOO term compares: "hidden" = concat(h1, h2) (the authors' evaluation scripts),
    # "action" = the blue agent's actions (the branch their train.py runs).
    soo_target: str = "hidden"

    def __post_init__(self):
        if self.mode not in SOO_MODES:
            raise ValueError(f"finetune.mode must be one of {SOO_MODES}, got {self.mode!r}")
        if self.soo_target not in SOO_TARGETS:
            raise ValueError(f"finetune.soo_target must be one of {SOO_TARGETS}, got {self.soo_target!r}")
        # Valid ranges (NaN and infinity never valid); errors name the RL config's key.
        for name, bounds in (("soo_weight", dict(low=0)), ("capability_weight", dict(low=0)),
                             ("random_weight", dict(low=0)), ("sight_radius", dict(low=0, low_open=True)),
                             ("position_clip", dict(low=0, high=1, low_open=True))):
            object.__setattr__(self, name, field_number(f"finetune.{name}", getattr(self, name), **bounds))
        object.__setattr__(self, "log_mse", field_flag("finetune.log_mse", self.log_mse))


def is_self_obs(blue_obs: jax.Array) -> jax.Array:
    adv = blue_obs[..., BLUE_ADVERSARY_SLICE]
    return (adv[..., 0] == 0) & (adv[..., 1] == 0)


def synthetic_other_obs(key, blue_obs, blue_pos, radius: float, position_clip: float = 0.9):
    """Inserts an adversary at U(0, 2pi) angle, U(0, radius) distance around `blue_pos`.

    As the authors' `new_create_other_observation`: obs[6:8] = p_blue - p_fake (the opposite
    sign of the env's p_adv - p_blue; the angle is uniform so only the convention differs) and
    the trap flag obs[8:10] is zeroed. Works on any leading batch shape.
    """
    k_angle, k_dist = jax.random.split(key)
    batch_shape = blue_obs.shape[:-1]
    angle = jax.random.uniform(k_angle, batch_shape, minval=0.0, maxval=2 * math.pi)
    distance = radius * jax.random.uniform(k_dist, batch_shape)
    offset = distance[..., None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)
    fake = jnp.clip(blue_pos + offset, -position_clip, position_clip)
    other = blue_obs.at[..., BLUE_ADVERSARY_SLICE].set(blue_pos - fake)
    return other.at[..., BLUE_TRAP_SLICE].set(0.0)


def hidden(hyper: MADDPGHyper, policy: NetState, obs: jax.Array, params: Any = None):
    """concat(h1, h2) and the action of a policy in eval mode, for (batch, obs_dim) inputs."""
    h1, h2, out = apply_eval(hyper.policy, policy, obs, params)
    return jnp.concatenate([h1, h2], -1), out


def soo_features(hyper, cfg: SOOConfig, policy: NetState, obs: jax.Array, params: Any = None):
    """(what SOO compares, the action) for (batch, obs_dim) inputs: concat(h1, h2) (128,) or the
    action (2,) itself, by `cfg.soo_target`."""
    h, action = hidden(hyper, policy, obs, params)
    return (h if cfg.soo_target == "hidden" else action), action


def mse_value(x, y, log: bool) -> jax.Array:
    value = jnp.mean(jnp.square(x - y))
    return jnp.log(value + LOG_EPS) if log else value


def soo_values(hyper, policy: NetState, key, blue_obs, other_pos, radius, position_clip=0.9):
    """Per-observation log-MSE SOO (the evaluation metric, lower = more overlap), and validity.

    `blue_obs` (n, 10) are the observations whose activations count as "self"; the synthetic
    adversary goes around `other_pos` (n, 2). Valid where the adversary is out of sight.
    """
    other = synthetic_other_obs(key, blue_obs, other_pos, radius, position_clip)
    h_self, _ = hidden(hyper, policy, blue_obs)
    h_other, _ = hidden(hyper, policy, other)
    value = jnp.log(jnp.mean(jnp.square(h_self - h_other), -1) + LOG_EPS)
    return value, is_self_obs(blue_obs)


def _blue_obs(obs: jax.Array) -> jax.Array:
    return obs[..., BLUE, : OBS_DIMS[BLUE]]


def soo_loss_terms(hyper, cfg: SOOConfig, params, blue: NetState, reference: NetState,
                   key, batch: Batch | None, last_step: LastStep | None):
    """(soo, capability, gate) for the blue policy with parameters `params`.

    Both terms use eval-mode forwards (running statistics), like the authors' rollout forwards.
    Gradients flow through both the self and the other pass. With `soo_target="action"` the SOO
    term compares the deterministic actions (no exploration noise on either side).
    """
    if cfg.mode == "minibatch":
        obs, pos = _blue_obs(batch.obs), batch.blue_pos
        other = synthetic_other_obs(key, obs, pos, cfg.sight_radius, cfg.position_clip)
        self_mask = is_self_obs(obs)
        f_self, action = soo_features(hyper, cfg, blue, obs, params)
        f_other, _ = soo_features(hyper, cfg, blue, other, params)
        per_sample = jnp.mean(jnp.square(f_self - f_other), -1)
        n_self = jnp.sum(self_mask)
        soo = jnp.sum(jnp.where(self_mask, per_sample, 0.0)) / jnp.maximum(n_self, 1)
        _, ref_action = hidden(hyper, reference, obs)
        capability = jnp.mean(jnp.square(action - ref_action))
        gate = n_self > 0
    else:
        obs = last_step.blue_obs[None]
        other = synthetic_other_obs(key, obs, last_step.post_pos[None], cfg.sight_radius,
                                    cfg.position_clip)
        f_self, action = soo_features(hyper, cfg, blue, obs, params)
        f_other, _ = soo_features(hyper, cfg, blue, other, params)
        soo = jnp.mean(jnp.square(f_self - f_other))
        executed = jnp.clip(action + last_step.noise, -1.0, 1.0)
        _, ref_action = hidden(hyper, reference, obs)
        capability = jnp.mean(jnp.square(executed - ref_action))
        gate = is_self_obs(last_step.blue_obs)
    if cfg.log_mse:
        soo, capability = jnp.log(soo + LOG_EPS), jnp.log(capability + LOG_EPS)
    return soo, capability, gate


def soo_actor_step(hyper: MADDPGHyper, cfg: SOOConfig, agents: Agents, reference: NetState,
                   batch: Batch | None, key, last_step: LastStep | None = None):
    """The extra optimizer step on the blue actor only (shares its Adam state, clip 0.5).

    Fires only where an SOO value exists (a self observation), as the authors' gate
    `agent_overlap_values[0] != 0`.
    """
    blue = agents[BLUE]
    k_other, k_random = jax.random.split(key)
    random_term = jnp.log(jax.random.uniform(k_random) ** 10 + LOG_EPS)

    def loss_fn(params):
        soo, capability, gate = soo_loss_terms(
            hyper, cfg, params, blue.policy, reference, k_other, batch, last_step
        )
        loss = (cfg.soo_weight * soo + cfg.capability_weight * capability
                + cfg.random_weight * jax.lax.stop_gradient(random_term))
        return loss, (soo, capability, gate)

    (loss, (soo, capability, gate)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        blue.policy.params
    )
    updates, opt_state = hyper.optimizer.update(grads, blue.policy_opt, blue.policy.params)
    stepped = blue.replace(
        policy=blue.policy.replace(params=optax.apply_updates(blue.policy.params, updates)),
        policy_opt=opt_state,
    )
    blue = jax.tree.map(lambda new, old: jnp.where(gate, new, old), stepped, blue)
    agents = tuple(blue if i == BLUE else a for i, a in enumerate(agents))
    metrics = {"soo_loss": soo, "capability_loss": capability, "soo_step": gate.astype(jnp.float32)}
    return agents, metrics


@dataclasses.dataclass(frozen=True)
class SOOActorStep:
    """`soo_actor_step` as the extra step of every MADDPG update round
    (`soo_jax.rl.maddpg.train.make_train_chunk(..., extra_actor_step=SOOActorStep(hyper, cfg))`)."""

    hyper: MADDPGHyper
    cfg: SOOConfig

    def __call__(self, agents: Agents, reference: NetState, batch: Batch | None, key, last_step: LastStep):
        return soo_actor_step(self.hyper, self.cfg, agents, reference, batch, key, last_step)
