"""One MADDPG update round against a PyTorch re-implementation of the authors' update
(maddpg-pytorch as described in docs/paper_notes.md §5.2/§5.2b), starting from identical
weights."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from soo_jax.rl.env import NUM_AGENTS, OBS_DIMS
from soo_jax.rl.maddpg.buffer import Batch
from soo_jax.rl.maddpg.core import MADDPGHyper, init_agents, soft_update_targets, update_agent

HYPER = MADDPGHyper(hidden_dim=16, batch_size=64)
B = HYPER.batch_size
# One compiled update (per agent index): far cheaper than op-by-op eager dispatch.
UPDATE = jax.jit(update_agent, static_argnums=(0, 2))


class TorchMLP(torch.nn.Module):
    def __init__(self, in_dim, out_dim, hidden, constrain):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(in_dim)
        self.fc1, self.fc2 = torch.nn.Linear(in_dim, hidden), torch.nn.Linear(hidden, hidden)
        self.fc3 = torch.nn.Linear(hidden, out_dim)
        self.constrain = constrain

    def forward(self, x):
        h1 = F.leaky_relu(self.fc1(self.bn(x)))
        h2 = F.leaky_relu(self.fc2(h1))
        out = self.fc3(h2)
        return h1, h2, torch.tanh(out) if self.constrain else out


def to_torch(net_state, in_dim, out_dim, constrain):
    m = TorchMLP(in_dim, out_dim, HYPER.hidden_dim, constrain).double()
    p, s = net_state.params, net_state.batch_stats
    with torch.no_grad():
        m.bn.weight.copy_(torch.tensor(np.asarray(p["input_norm"]["scale"])))
        m.bn.bias.copy_(torch.tensor(np.asarray(p["input_norm"]["bias"])))
        m.bn.running_mean.copy_(torch.tensor(np.asarray(s["input_norm"]["mean"])))
        m.bn.running_var.copy_(torch.tensor(np.asarray(s["input_norm"]["var"])))
        for name in ("fc1", "fc2", "fc3"):
            getattr(m, name).weight.copy_(torch.tensor(np.asarray(p[name]["kernel"]).T))
            getattr(m, name).bias.copy_(torch.tensor(np.asarray(p[name]["bias"])))
    return m


def assert_same(net_state, m, atol=2e-4):
    p, s = net_state.params, net_state.batch_stats
    np.testing.assert_allclose(p["input_norm"]["scale"], m.bn.weight.detach(), atol=atol)
    np.testing.assert_allclose(p["input_norm"]["bias"], m.bn.bias.detach(), atol=atol)
    np.testing.assert_allclose(s["input_norm"]["mean"], m.bn.running_mean, atol=atol, rtol=1e-4)
    np.testing.assert_allclose(s["input_norm"]["var"], m.bn.running_var, atol=atol, rtol=1e-4)
    for name in ("fc1", "fc2", "fc3"):
        np.testing.assert_allclose(p[name]["kernel"], getattr(m, name).weight.detach().T, atol=atol)
        np.testing.assert_allclose(p[name]["bias"], getattr(m, name).bias.detach(), atol=atol)


def torch_agents(agents):
    critic_in = sum(OBS_DIMS) + 2 * NUM_AGENTS
    out = []
    for a, d in zip(agents, OBS_DIMS):
        pol, crit = to_torch(a.policy, d, 2, True), to_torch(a.critic, critic_in, 1, False)
        out.append({
            "policy": pol, "critic": crit,
            "target_policy": to_torch(a.target_policy, d, 2, True),
            "target_critic": to_torch(a.target_critic, critic_in, 1, False),
            "policy_opt": torch.optim.Adam(pol.parameters(), lr=HYPER.lr),
            "critic_opt": torch.optim.Adam(crit.parameters(), lr=HYPER.lr),
        })
    for a in out:
        for net in ("policy", "critic", "target_policy", "target_critic"):
            a[net].train()
    return out


def torch_update(agents, i, obs, acs, rews, next_obs):
    """`MADDPG.update` for continuous actions, all nets in train mode, dones all False."""
    me = agents[i]
    me["critic_opt"].zero_grad()
    trgt_acs = [a["target_policy"](no)[2] for a, no in zip(agents, next_obs)]
    target = rews[i].view(-1, 1) + HYPER.gamma * me["target_critic"](torch.cat((*next_obs, *trgt_acs), 1))[2]
    actual = me["critic"](torch.cat((*obs, *acs), 1))[2]
    torch.nn.MSELoss()(actual, target.detach()).backward()
    torch.nn.utils.clip_grad_norm_(me["critic"].parameters(), 0.5)
    me["critic_opt"].step()
    me["policy_opt"].zero_grad()
    curr = me["policy"](obs[i])[2]
    all_acs = [curr if j == i else a["policy"](o)[2] for j, (a, o) in enumerate(zip(agents, obs))]
    loss = -me["critic"](torch.cat((*obs, *all_acs), 1))[2].mean() + (curr ** 2).mean() * 1e-3
    loss.backward()
    torch.nn.utils.clip_grad_norm_(me["policy"].parameters(), 0.5)
    me["policy_opt"].step()


def torch_soft_update(agents, tau):
    with torch.no_grad():
        for a in agents:
            for tgt, src in (("target_policy", "policy"), ("target_critic", "critic")):
                for tp, sp in zip(a[tgt].parameters(), a[src].parameters()):
                    tp.copy_(tp * (1 - tau) + sp * tau)


def random_batch(key):
    k = jax.random.split(key, 4)
    obs = jax.random.normal(k[0], (B, NUM_AGENTS, 10))
    next_obs = jax.random.normal(k[1], (B, NUM_AGENTS, 10))
    obs, next_obs = (x.at[:, 0, 6:].set(0.0) for x in (obs, next_obs))
    return Batch(obs=obs, actions=jax.random.uniform(k[2], (B, NUM_AGENTS, 2), minval=-5, maxval=5),
                 rewards=jax.random.normal(k[3], (B, NUM_AGENTS)), next_obs=next_obs,
                 blue_pos=jnp.zeros((B, 2)))


def split(x, dims=OBS_DIMS):
    return [torch.tensor(np.asarray(x[:, a, :d]), dtype=torch.float64) for a, d in enumerate(dims)]


def test_update_round_matches_torch():
    agents = init_agents(jax.random.PRNGKey(0), HYPER)
    t_agents = torch_agents(agents)
    for i in range(NUM_AGENTS):
        batch = random_batch(jax.random.PRNGKey(10 + i))
        agents, _ = UPDATE(HYPER, agents, i, batch)
        torch_update(t_agents, i, split(batch.obs), split(batch.actions, (2, 2)),
                     [torch.tensor(np.asarray(batch.rewards[:, a]), dtype=torch.float64)
                      for a in range(NUM_AGENTS)], split(batch.next_obs))
    agents = jax.jit(soft_update_targets, static_argnums=0)(HYPER, agents)
    torch_soft_update(t_agents, HYPER.tau)
    for a, t in zip(agents, t_agents):
        for net in ("policy", "critic", "target_policy", "target_critic"):
            assert_same(getattr(a, net), t[net])
    # The update did something (the comparison is not between two untouched copies).
    fresh = init_agents(jax.random.PRNGKey(0), HYPER)
    moved = jnp.abs(agents[1].policy.params["fc1"]["kernel"] - fresh[1].policy.params["fc1"]["kernel"])
    assert float(moved.max()) > 1e-3
    assert float(jnp.abs(agents[0].policy.batch_stats["input_norm"]["mean"]).max()) > 1e-3
