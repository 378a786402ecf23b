"""SOO terms and the SOO actor step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from soo_jax.rl.env import BLUE
from soo_jax.rl.maddpg.buffer import Batch
from soo_jax.rl.maddpg.core import MADDPGHyper, init_agents
from soo_jax.rl.maddpg.train import LastStep
from soo_jax.rl.soo import (
    SOOConfig, is_self_obs, mse_value, soo_actor_step, soo_loss_terms, synthetic_other_obs,
)

HYPER = MADDPGHyper(hidden_dim=16, batch_size=32)
LOSS_TERMS = jax.jit(soo_loss_terms, static_argnums=(0, 1))


def self_batch(key, n=32, n_visible=8):
    k1, k2 = jax.random.split(key)
    obs = jax.random.uniform(k1, (n, 2, 10), minval=-1, maxval=1)
    obs = obs.at[:, 0, 6:].set(0.0).at[:, BLUE, 8:].set(1.0)
    obs = obs.at[n_visible:, BLUE, 6:8].set(0.0)  # the rest: adversary out of sight
    pos = jax.random.uniform(k2, (n, 2), minval=-0.8, maxval=0.8)
    return Batch(obs=obs, actions=jnp.zeros((n, 2, 2)), rewards=jnp.zeros((n, 2)), next_obs=obs,
                 blue_pos=pos)


def test_synthetic_adversary_lies_within_radius():
    n = 5000
    pos = jax.random.uniform(jax.random.PRNGKey(0), (n, 2), minval=-0.9, maxval=0.9)
    pos = pos.at[:4].set(jnp.array([[0.9, 0.9], [-0.9, 0.89], [0.0, -0.9], [0.1, 0.2]]))
    obs = jnp.ones((n, 10))
    other = synthetic_other_obs(jax.random.PRNGKey(1), obs, pos, radius=0.125)
    dist = np.linalg.norm(np.asarray(other[:, 6:8]), axis=-1)
    assert dist.max() <= 0.125 + 1e-6 and dist.min() >= 0
    assert dist.max() > 0.12 and dist.mean() > 0.04  # spread over the disc, not collapsed
    np.testing.assert_array_equal(other[:, 8:10], 0.0)  # trap flag zeroed
    np.testing.assert_array_equal(other[:, :6], obs[:, :6])  # rest untouched
    assert not bool(is_self_obs(other).any())
    fake = np.asarray(pos) - np.asarray(other[:, 6:8])  # p_blue - p_fake convention
    assert np.all(np.abs(fake) <= 0.9 + 1e-6)


def test_soo_term_is_zero_when_activations_are_equal():
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    blue = agents[BLUE].policy
    # Zero the first layer's weights on the adversary and trap inputs: h(self) == h(other).
    params = jax.tree.map(lambda x: x, blue.params)
    params["fc1"]["kernel"] = params["fc1"]["kernel"].at[6:10].set(0.0)
    batch = self_batch(jax.random.PRNGKey(1))
    cfg = SOOConfig()
    soo, capability, gate = LOSS_TERMS(HYPER, cfg, params, blue, blue, jax.random.PRNGKey(2),
                                           batch, None)
    assert float(soo) == 0.0 and bool(gate)
    # Same policy as reference and no noise: capability term is zero too (at unchanged params).
    _, cap_same, _ = LOSS_TERMS(HYPER, cfg, blue.params, blue, blue, jax.random.PRNGKey(2),
                                    batch, None)
    assert float(cap_same) == 0.0
    soo_default, _, _ = LOSS_TERMS(HYPER, cfg, blue.params, blue, blue, jax.random.PRNGKey(2),
                                       batch, None)
    assert float(soo_default) > 0.0
    assert float(mse_value(jnp.ones(4), jnp.ones(4), log=True)) == pytest.approx(np.log(1e-25))


@pytest.mark.parametrize("mode", ["minibatch", "last_step"])
@pytest.mark.parametrize("target", ["hidden", "action"])
def test_soo_step_changes_only_the_blue_actor(mode, target):
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    reference = init_agents(jax.random.PRNGKey(7), HYPER)[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))
    last = LastStep(batch.obs[-1, BLUE], jnp.array([0.1, -0.2]), batch.blue_pos[-1])
    cfg = SOOConfig(mode=mode, soo_target=target)
    new, metrics = jax.jit(
        lambda a, b, k, l: soo_actor_step(HYPER, cfg, a, reference, b, k, l)
    )(agents, batch, jax.random.PRNGKey(3), last)
    assert float(metrics["soo_step"]) == 1.0
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new, agents)
    assert all(jax.tree.leaves(changed[BLUE].policy.params["fc1"]))
    assert any(jax.tree.leaves(changed[BLUE].policy_opt))
    for name in ("critic", "target_policy", "target_critic", "critic_opt"):
        assert not any(jax.tree.leaves(getattr(changed[BLUE], name))), name
    assert not any(jax.tree.leaves(changed[BLUE].policy.batch_stats))  # eval-mode forwards
    assert not any(jax.tree.leaves(changed[0])), "adversary must not change"


def test_soo_step_needs_a_self_observation():
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    batch = self_batch(jax.random.PRNGKey(1), n_visible=32)  # adversary visible everywhere
    step = jax.jit(soo_actor_step, static_argnums=(0, 1))
    new, metrics = step(HYPER, SOOConfig(), agents, agents[BLUE].policy, batch, jax.random.PRNGKey(3))
    assert float(metrics["soo_step"]) == 0.0
    jax.tree.map(np.testing.assert_array_equal, new, agents)


def test_repeated_soo_steps_reduce_the_soo_term():
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    reference = agents[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))
    cfg = SOOConfig(capability_weight=0.0)
    step = jax.jit(lambda a, k: soo_actor_step(HYPER, cfg, a, reference, batch, k))
    _, first = step(agents, jax.random.PRNGKey(5))
    for i in range(30):
        agents, m = step(agents, jax.random.PRNGKey(5))  # same synthetic adversaries
    assert float(m["soo_loss"]) < 0.5 * float(first["soo_loss"])


def test_random_control_adds_no_gradient():
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    reference = init_agents(jax.random.PRNGKey(7), HYPER)[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))
    step = jax.jit(soo_actor_step, static_argnums=(0, 1))
    cap_only, _ = step(HYPER, SOOConfig(soo_weight=0.0), agents, reference, batch,
                       jax.random.PRNGKey(3))
    with_random, _ = step(HYPER, SOOConfig(soo_weight=0.0, random_weight=1.0), agents, reference,
                          batch, jax.random.PRNGKey(3))
    jax.tree.map(np.testing.assert_array_equal, cap_only, with_random)


def todays_soo_loss_terms(hyper, cfg, params, blue, reference, key, batch, last_step):
    """soo_loss_terms as it was before `soo_target` existed (concat(h1, h2) only), verbatim."""
    from soo_jax.rl.soo import LOG_EPS, hidden

    if cfg.mode == "minibatch":
        obs, pos = batch.obs[..., BLUE, :10], batch.blue_pos
        other = synthetic_other_obs(key, obs, pos, cfg.sight_radius, cfg.position_clip)
        self_mask = is_self_obs(obs)
        h_self, action = hidden(hyper, blue, obs, params)
        h_other, _ = hidden(hyper, blue, other, params)
        per_sample = jnp.mean(jnp.square(h_self - h_other), -1)
        n_self = jnp.sum(self_mask)
        soo = jnp.sum(jnp.where(self_mask, per_sample, 0.0)) / jnp.maximum(n_self, 1)
        _, ref_action = hidden(hyper, reference, obs)
        capability = jnp.mean(jnp.square(action - ref_action))
        gate = n_self > 0
    else:
        obs = last_step.blue_obs[None]
        other = synthetic_other_obs(key, obs, last_step.post_pos[None], cfg.sight_radius,
                                    cfg.position_clip)
        h_self, action = hidden(hyper, blue, obs, params)
        h_other, _ = hidden(hyper, blue, other, params)
        soo = jnp.mean(jnp.square(h_self - h_other))
        executed = jnp.clip(action + last_step.noise, -1.0, 1.0)
        _, ref_action = hidden(hyper, reference, obs)
        capability = jnp.mean(jnp.square(executed - ref_action))
        gate = is_self_obs(last_step.blue_obs)
    if cfg.log_mse:
        soo, capability = jnp.log(soo + LOG_EPS), jnp.log(capability + LOG_EPS)
    return soo, capability, gate


@pytest.mark.parametrize("mode", ["minibatch", "last_step"])
@pytest.mark.parametrize("log_mse", [False, True])
def test_default_soo_loss_is_todays_bit_for_bit(mode, log_mse):
    """The default soo_target ("hidden") is the loss every earlier run trained with."""
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    reference = init_agents(jax.random.PRNGKey(7), HYPER)[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))
    last = LastStep(batch.obs[-1, BLUE], jnp.array([0.1, -0.2]), batch.blue_pos[-1])
    cfg = SOOConfig(mode=mode, log_mse=log_mse)
    assert cfg.soo_target == "hidden"
    blue = agents[BLUE].policy
    now = LOSS_TERMS(HYPER, cfg, blue.params, blue, reference, jax.random.PRNGKey(2), batch, last)
    before = jax.jit(todays_soo_loss_terms, static_argnums=(0, 1))(
        HYPER, cfg, blue.params, blue, reference, jax.random.PRNGKey(2), batch, last)
    for a, b in zip(now, before):
        np.testing.assert_array_equal(a, b)
    grad = jax.jit(jax.grad(lambda p, f: sum(f(HYPER, cfg, p, blue, reference, jax.random.PRNGKey(2),
                                                  batch, last)[:2])), static_argnums=1)
    jax.tree.map(np.testing.assert_array_equal, grad(blue.params, soo_loss_terms),
                 grad(blue.params, todays_soo_loss_terms))


@pytest.mark.parametrize("mode", ["minibatch", "last_step"])
def test_action_target_is_zero_when_actions_with_and_without_the_adversary_agree(mode):
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    blue = agents[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))
    last = LastStep(batch.obs[-1, BLUE], jnp.zeros(2), batch.blue_pos[-1])
    action, hidden_ = SOOConfig(mode=mode, soo_target="action"), SOOConfig(mode=mode)
    # A zero output layer: the action is tanh(bias) whatever the input, while h1, h2 still differ.
    params = jax.tree.map(lambda x: x, blue.params)
    params["fc3"]["kernel"] = jnp.zeros_like(params["fc3"]["kernel"])
    soo_a, _, _ = LOSS_TERMS(HYPER, action, params, blue, blue, jax.random.PRNGKey(2), batch, last)
    soo_h, _, _ = LOSS_TERMS(HYPER, hidden_, params, blue, blue, jax.random.PRNGKey(2), batch, last)
    assert float(soo_a) == 0.0 and float(soo_h) > 0.0
    # Unchanged weights: the actions do see the synthetic adversary.
    soo_a, _, _ = LOSS_TERMS(HYPER, action, blue.params, blue, blue, jax.random.PRNGKey(2), batch, last)
    assert float(soo_a) > 0.0


def test_action_target_compares_actions_so_its_gradient_reaches_the_output_layer():
    """concat(h1, h2) does not depend on fc3; the blue action does. SOO term alone."""
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    blue = agents[BLUE].policy
    batch = self_batch(jax.random.PRNGKey(1))

    def soo_grad(target):
        cfg = SOOConfig(soo_target=target)
        return jax.grad(lambda p: soo_loss_terms(HYPER, cfg, p, blue, blue, jax.random.PRNGKey(2),
                                                 batch, None)[0])(blue.params)

    assert float(jnp.abs(soo_grad("hidden")["fc3"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(soo_grad("action")["fc3"]["kernel"]).max()) > 0.0
    assert float(jnp.abs(soo_grad("action")["fc1"]["kernel"]).max()) > 0.0


def test_unknown_soo_target_is_refused():
    with pytest.raises(ValueError, match="soo_target"):
        SOOConfig(soo_target="logits")
