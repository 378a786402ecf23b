"""The authors' MLP (maddpg-pytorch `MLPNetwork`) in Flax Linen, with PyTorch's initialisation.

Linen rather than NNX: the network is a pure function of `{"params", "batch_stats"}`, which is
exactly what a `lax.scan` carry and a `vmap` over seeds want, and `mutable=["batch_stats"]`
hands back BatchNorm's running statistics explicitly instead of mutating a module.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct


def _uniform(bound: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchBatchNorm1d(nn.Module):
    """`torch.nn.BatchNorm1d`: normalises with the biased batch variance, tracks the unbiased one.

    Flax's BatchNorm tracks the biased variance; the authors' policies run on these running
    statistics during rollouts, so the difference would matter.
    """

    momentum: float = 0.1
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,))
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,))
        if train:
            mean = x.mean(axis=0)
            var = x.var(axis=0)
            if not self.is_initializing():
                n = x.shape[0]
                m = self.momentum
                running_mean.value = (1 - m) * running_mean.value + m * jax.lax.stop_gradient(mean)
                unbiased = jax.lax.stop_gradient(var) * n / max(n - 1, 1)
                running_var.value = (1 - m) * running_var.value + m * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class TorchDense(nn.Module):
    """`torch.nn.Linear` with its default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) init."""

    features: int
    kernel_bound: float | None = None  # overrides the weight init bound (policy output layer)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        bound = 1.0 / math.sqrt(x.shape[-1])
        kernel_bound = bound if self.kernel_bound is None else self.kernel_bound
        kernel = self.param("kernel", _uniform(kernel_bound), (x.shape[-1], self.features))
        bias = self.param("bias", _uniform(bound), (self.features,))
        return x @ kernel + bias


class MLP(nn.Module):
    """BatchNorm(input) -> 64 -> 64 -> out with leaky ReLU; returns (h1, h2, out).

    Policies (`constrain_out=True`) end in tanh with a U(-3e-3, 3e-3) last-layer weight init.
    """

    out_dim: int
    hidden_dim: int = 64
    constrain_out: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        x = TorchBatchNorm1d(name="input_norm")(x, train)
        h1 = nn.leaky_relu(TorchDense(self.hidden_dim, name="fc1")(x), 0.01)
        h2 = nn.leaky_relu(TorchDense(self.hidden_dim, name="fc2")(h1), 0.01)
        out = TorchDense(self.out_dim, kernel_bound=3e-3 if self.constrain_out else None,
                         name="fc3")(h2)
        if self.constrain_out:
            out = jnp.tanh(out)
        return h1, h2, out


@struct.dataclass
class NetState:
    """A network's trainable parameters and BatchNorm running statistics."""

    params: Any
    batch_stats: Any


def init_net(module: MLP, key: jax.Array, in_dim: int) -> NetState:
    variables = module.init(key, jnp.zeros((2, in_dim)), train=False)
    return NetState(variables["params"], variables["batch_stats"])


def apply_eval(module: MLP, net: NetState, x: jax.Array, params: Any = None):
    """Forward with running statistics (torch `eval()`); `params` overrides for differentiation."""
    variables = {"params": net.params if params is None else params,
                 "batch_stats": net.batch_stats}
    return module.apply(variables, x, train=False)


def apply_train(module: MLP, net: NetState, x: jax.Array, params: Any = None):
    """Forward with batch statistics (torch `train()`); returns (outputs, updated NetState)."""
    variables = {"params": net.params if params is None else params,
                 "batch_stats": net.batch_stats}
    outputs, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
    return outputs, NetState(net.params, updates["batch_stats"])
