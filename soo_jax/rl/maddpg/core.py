"""MADDPG (maddpg-pytorch as the authors ran it): agents, acting, one update round.

Every network forward inside an update runs in "train" mode, i.e. with batch statistics and an
update of that network's BatchNorm running statistics, as the authors' `prep_training()` does;
acting uses the running statistics (`prep_rollouts()` -> `eval()`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct

from soo_jax.checks import field_number
from soo_jax.rl.env import ACTION_DIM, BLUE, NUM_AGENTS, OBS_DIMS
from soo_jax.rl.maddpg.buffer import Batch, ReplayBuffer, sample
from soo_jax.rl.maddpg.networks import MLP, NetState, apply_eval, apply_train, init_net

CRITIC_IN_DIM = sum(OBS_DIMS) + NUM_AGENTS * ACTION_DIM


# Valid ranges of MADDPGHyper's fields (NaN and infinity are never valid).
RANGES = {
    "hidden_dim": dict(integer=True, low=1), "lr": dict(low=0, low_open=True), "gamma": dict(low=0, high=1),
    "tau": dict(low=0, high=1, low_open=True), "grad_clip": dict(low=0, low_open=True),
    "actor_output_penalty": dict(low=0), "batch_size": dict(integer=True, low=1),
    "buffer_size": dict(integer=True, low=1), "steps_per_update": dict(integer=True, low=1),
    "episode_length": dict(integer=True, low=1), "init_noise_scale": dict(low=0), "final_noise_scale": dict(low=0),
    "n_exploration_episodes": dict(integer=True, low=1), "ou_theta": dict(low=0), "ou_sigma": dict(low=0),
    "ou_mu": dict(), "ou_draws_per_step": dict(integer=True, low=1), "buffer_action_scale": dict(low=0, low_open=True),
}


@dataclasses.dataclass(frozen=True)
class MADDPGHyper:
    """Hyperparameters (train.py / maddpg.py defaults and the README's commands)."""

    hidden_dim: int = 64
    lr: float = 0.01
    gamma: float = 0.95
    tau: float = 0.01
    grad_clip: float = 0.5
    actor_output_penalty: float = 1e-3
    batch_size: int = 1024
    buffer_size: int = 1_000_000
    steps_per_update: int = 100
    episode_length: int = 50
    init_noise_scale: float = 0.3
    final_noise_scale: float = 0.0
    n_exploration_episodes: int = 25_000
    ou_theta: float = 0.15
    ou_sigma: float = 0.2
    ou_mu: float = 0.0
    # Faithful quirks (docs/paper_notes.md §5.2b): the OU process advances 3x per env step, and
    # the buffer keeps the actions after the env scaled them x5 in place. 1 and 1.0 are the
    # consistent variants.
    ou_draws_per_step: int = 3
    buffer_action_scale: float = 5.0

    def __post_init__(self):
        # Each message starts with the field's name: the RL config reports it as `config.maddpg.<field>: ...`.
        for name, bounds in RANGES.items():
            object.__setattr__(self, name, field_number(name, getattr(self, name), **bounds))

    @property
    def policy(self) -> MLP:
        return MLP(ACTION_DIM, self.hidden_dim, constrain_out=True)

    @property
    def critic(self) -> MLP:
        return MLP(1, self.hidden_dim, constrain_out=False)

    @property
    def optimizer(self) -> optax.GradientTransformation:
        # torch Adam defaults + clip_grad_norm(0.5) over one network's parameters.
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), optax.adam(self.lr, eps=1e-8))


@struct.dataclass
class AgentState:
    policy: NetState
    critic: NetState
    target_policy: NetState
    target_critic: NetState
    policy_opt: Any
    critic_opt: Any


Agents = tuple  # (adversary AgentState, blue AgentState)


@functools.partial(jax.jit, static_argnums=1)
def init_agents(key: jax.Array, hyper: MADDPGHyper) -> Agents:
    agents = []
    for agent_key, obs_dim in zip(jax.random.split(key, NUM_AGENTS), OBS_DIMS):
        k_pol, k_crit = jax.random.split(agent_key)
        policy = init_net(hyper.policy, k_pol, obs_dim)
        critic = init_net(hyper.critic, k_crit, CRITIC_IN_DIM)
        agents.append(AgentState(
            policy=policy,
            critic=critic,
            target_policy=policy,  # hard copies at init
            target_critic=critic,
            policy_opt=hyper.optimizer.init(policy.params),
            critic_opt=hyper.optimizer.init(critic.params),
        ))
    return tuple(agents)


def split_obs(obs: jax.Array) -> list[jax.Array]:
    """Padded (..., agents, MAX_OBS_DIM) -> per-agent (..., obs_dim) views."""
    return [obs[..., a, :d] for a, d in enumerate(OBS_DIMS)]


def act(hyper: MADDPGHyper, agents: Agents, obs: jax.Array):
    """Deterministic actions for one env observation (agents, MAX_OBS_DIM), eval mode.

    Returns (hidden, actions): hidden[a] = concat(h1, h2) of agent a (hidden_dim * 2,),
    actions (agents, ACTION_DIM).
    """
    hidden, actions = [], []
    for agent, agent_obs in zip(agents, split_obs(obs)):
        h1, h2, out = apply_eval(hyper.policy, agent.policy, agent_obs[None])
        hidden.append(jnp.concatenate([h1, h2], -1)[0])
        actions.append(out[0])
    return hidden, jnp.stack(actions)


def _optimizer_step(hyper, net: NetState, opt_state, grads):
    updates, opt_state = hyper.optimizer.update(grads, opt_state, net.params)
    return net.replace(params=optax.apply_updates(net.params, updates)), opt_state


def update_agent(hyper: MADDPGHyper, agents: Agents, i: int, batch: Batch):
    """One critic step and one actor step for agent i on its minibatch (`MADDPG.update`)."""
    agents = list(agents)
    obs, next_obs = split_obs(batch.obs), split_obs(batch.next_obs)
    stored_actions = [batch.actions[:, a] for a in range(NUM_AGENTS)]

    target_actions = []
    for j in range(NUM_AGENTS):
        (_, _, a_j), target_policy = apply_train(hyper.policy, agents[j].target_policy, next_obs[j])
        agents[j] = agents[j].replace(target_policy=target_policy)
        target_actions.append(a_j)
    me = agents[i]
    (_, _, q_next), target_critic = apply_train(
        hyper.critic, me.target_critic, jnp.concatenate(next_obs + target_actions, -1)
    )
    # The authors' dones are always False (episodes end by time limit only): no (1 - done).
    q_target = jax.lax.stop_gradient(batch.rewards[:, i : i + 1] + hyper.gamma * q_next)
    critic_in = jnp.concatenate(obs + stored_actions, -1)

    def critic_loss(params):
        (_, _, q), critic = apply_train(hyper.critic, me.critic, critic_in, params)
        return jnp.mean(jnp.square(q - q_target)), critic

    (vf_loss, critic), grads = jax.value_and_grad(critic_loss, has_aux=True)(me.critic.params)
    critic, critic_opt = _optimizer_step(hyper, critic, me.critic_opt, grads)

    # The other agents' current policies, in train mode (their running statistics move too).
    current_actions = [None] * NUM_AGENTS
    for j in range(NUM_AGENTS):
        if j != i:
            (_, _, current_actions[j]), policy_j = apply_train(hyper.policy, agents[j].policy, obs[j])
            agents[j] = agents[j].replace(policy=policy_j)

    def actor_loss(params):
        (_, _, a_i), policy = apply_train(hyper.policy, me.policy, obs[i], params)
        actions = [a_i if j == i else current_actions[j] for j in range(NUM_AGENTS)]
        (_, _, q), critic_after = apply_train(hyper.critic, critic, jnp.concatenate(obs + actions, -1))
        loss = -jnp.mean(q) + hyper.actor_output_penalty * jnp.mean(jnp.square(a_i))
        return loss, (policy, critic_after)

    (pol_loss, (policy, critic)), grads = jax.value_and_grad(actor_loss, has_aux=True)(
        me.policy.params
    )
    policy, policy_opt = _optimizer_step(hyper, policy, me.policy_opt, grads)
    agents[i] = me.replace(
        policy=policy, critic=critic, target_critic=target_critic,
        policy_opt=policy_opt, critic_opt=critic_opt,
    )
    return tuple(agents), {"critic_loss": vf_loss, "actor_loss": pol_loss}


def soft_update_targets(hyper: MADDPGHyper, agents: Agents) -> Agents:
    """Polyak-averages parameters only; BatchNorm running statistics are not copied (as torch)."""
    def blend(target: NetState, source: NetState) -> NetState:
        params = jax.tree.map(
            lambda t, s: (1.0 - hyper.tau) * t + hyper.tau * s, target.params, source.params
        )
        return target.replace(params=params)

    return tuple(
        a.replace(target_policy=blend(a.target_policy, a.policy),
                  target_critic=blend(a.target_critic, a.critic))
        for a in agents
    )


BlueExtraStep = Callable[[Agents, Batch, jax.Array], tuple[Agents, dict]]


def update_round(
    hyper: MADDPGHyper,
    agents: Agents,
    buffer: ReplayBuffer,
    key: jax.Array,
    size: jax.Array,
    blue_extra_step: BlueExtraStep | None = None,
):
    """Each agent samples its own minibatch and updates; then all targets move (`update_all_targets`).

    `blue_extra_step` (SOO fine-tuning) runs on the blue agent's minibatch right before the blue
    agent's MADDPG update, where the authors' `MADDPG.update(agent_i=1, self_other=True)` puts it.
    Returns (agents, metrics, first sampled buffer slot per agent (agents,)): the last lets two
    runs check that they drew the same minibatches.
    """
    metrics, first_index = {}, []
    keys = jax.random.split(key, NUM_AGENTS + 1)
    for i in range(NUM_AGENTS):
        batch = sample(buffer, keys[i], size, hyper.batch_size)
        first_index.append(batch.index[0])
        if i == BLUE and blue_extra_step is not None:
            agents, extra = blue_extra_step(agents, batch, keys[-1])
            metrics.update(extra)
        agents, losses = update_agent(hyper, agents, i, batch)
        metrics.update({f"{name}_{i}": v for name, v in losses.items()})
    return soft_update_targets(hyper, agents), metrics, jnp.stack(first_index)
