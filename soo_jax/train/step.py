"""The SOO train step: one `jax.jit`-compiled function with NamedShardings on a Mesh.

The model is split once into (graph, frozen base, LoRA). Only the LoRA parameters are
differentiated (the objective, `soo_jax.soo.soo_loss`), carried by the optimizer and returned;
the frozen base is an input, never an output, so it stays bit-identical. Gradients are
accumulated over microbatches with `lax.scan`; a step whose loss or gradient is not finite
leaves the state unchanged and reports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from soo_jax.checks import field_number
from soo_jax.lora import lora_linears, set_dropout
from soo_jax.models.transformer import CausalLM
from soo_jax.sharding import DEFAULT_RULES, Rules, logical_to_spec, state_shardings
from soo_jax.soo import LossConfig, metric_names, soo_loss

Array = jax.Array
# One array per LoRA variable, as the model holds it, named by its state path:
# "layers/self_attn/q_proj/lora/a" -> [layers, in, r], "lm_head/lora/a" -> [in, r].
LoRAParams = dict[str, Array]


@struct.dataclass
class TrainState:
    step: Array
    lora: LoRAParams
    opt_state: Any
    # Raw key data (uint32) of the dropout seed: traced, not a compile-time constant, so runs
    # with different seeds share one compiled step (and the persistent compilation cache).
    dropout_key: Array


# --- The model split into graph, frozen base and LoRA --------------------------------------

def _key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


class SplitModel:
    """A model split into its graph, frozen base state and LoRA template (shapes, metadata).

    The trainable LoRA parameters are the model's LoRA variables as they are (`LoRAParams`): a
    stacked adapter is one array with the layer axis in front. On an adapter restricted to some
    layers (`LoRAConfig.layers`) the other layers' rows are zero; `layer_masks` marks the real
    rows, and `mask_gradients` zeroes the gradient of the others: they count in no gradient norm,
    and AdamW moves a zero parameter with zero gradients by exactly zero, so they stay zero."""

    def __init__(self, model: CausalLM):
        set_dropout(model, True)
        # Dropout RNG state is kept apart from the frozen weights: the step reseeds it anyway.
        self.graphdef, lora_state, self.rng_state, self.frozen = nnx.split(
            model, nnx.LoRAParam, nnx.RngState, ...)
        set_dropout(model, False)
        self.eval_graphdef = nnx.graphdef(model)
        adapted = {path: linear.lora.adapted_layers for path, linear in lora_linears(model)
                   if linear.lora is not None}
        self._template = list(nnx.to_flat_state(lora_state))  # (state path, variable)
        if not self._template:
            raise ValueError("the model has no LoRA parameters: call soo_jax.lora.apply_lora first")
        # Per stacked variable whose adapter skips some layers: [layers] bool, True where adapted.
        self.layer_masks: dict[str, np.ndarray] = {}
        for path, var in self._template:
            layers = adapted[path[:-2]]
            if layers is not None and len(layers) < var.shape[0]:
                self.layer_masks[_key(path)] = np.isin(np.arange(var.shape[0]), layers)
        self.initial_lora = self.lora_params(lora_state)
        self.config = model.config

    def lora_params(self, lora_state: nnx.State) -> LoRAParams:
        """The model's LoRA state -> LoRAParams."""
        return {_key(path): var.get_value() for path, var in nnx.to_flat_state(lora_state)}

    def lora_state(self, lora: LoRAParams) -> nnx.State:
        """LoRAParams -> the model's LoRA state (for `nnx.update` or `nnx.merge`)."""
        return nnx.from_flat_state([(path, var.replace(jnp.asarray(lora[_key(path)], var.dtype)))
                                    for path, var in self._template])

    def mask_gradients(self, grads: LoRAParams) -> LoRAParams:
        """`grads` with the rows of layers without an adapter set to zero."""
        def masked(name, g):
            mask = self.layer_masks.get(name)
            if mask is None:
                return g
            return jnp.where(mask.reshape((-1,) + (1,) * (g.ndim - 1)), g, jnp.zeros((), g.dtype))
        return {name: masked(name, g) for name, g in grads.items()}

    def merge(self, lora: LoRAParams, frozen=None, *, training: bool = True) -> CausalLM:
        graphdef = self.graphdef if training else self.eval_graphdef
        # Fresh RNG variables, created in the caller's trace, so dropout may advance them there.
        rng_state = jax.tree.map(lambda x: x, self.rng_state)
        return nnx.merge(graphdef, self.lora_state(lora), rng_state, self.frozen if frozen is None else frozen)

    def lora_logical_axes(self) -> dict[str, tuple]:
        """Logical axes of each LoRAParams array ('layers' first on a stacked one)."""
        return {_key(path): tuple(var.get_metadata()["logical_axes"]) for path, var in self._template}


# --- Optimizer -----------------------------------------------------------------------------

SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    total_steps: int = 100
    schedule: Literal["constant", "cosine", "linear"] = "constant"  # one of SCHEDULES
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0

    def __post_init__(self):
        # Each message starts with the field's name: a run config reports it as `config.optimizer.<field>: ...`.
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: {self.schedule!r} is not one of {SCHEDULES}")
        # Valid ranges: NaN and infinity are never valid (soo_jax.checks).
        for name, bounds in (("learning_rate", dict(low=0, low_open=True)), ("weight_decay", dict(low=0)),
                             ("b1", dict(low=0, high=1, high_open=True)), ("b2", dict(low=0, high=1, high_open=True)),
                             ("eps", dict(low=0, low_open=True))):
            object.__setattr__(self, name, field_number(name, getattr(self, name), **bounds))
        object.__setattr__(self, "warmup_steps", field_number("warmup_steps", self.warmup_steps, integer=True, low=0))
        object.__setattr__(self, "total_steps", field_number("total_steps", self.total_steps, integer=True, low=1))
        if self.max_grad_norm is not None:
            norm = field_number("max_grad_norm", self.max_grad_norm)
            if norm < 0:
                raise ValueError(f"max_grad_norm: must be > 0, or 0 for no clipping, got {norm!r}")
            object.__setattr__(self, "max_grad_norm", norm or None)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    warmup = max(config.warmup_steps, 0)
    decay_steps = max(config.total_steps - warmup, 1)
    if config.schedule == "constant":
        main = optax.constant_schedule(config.learning_rate)
    elif config.schedule == "cosine":
        main = optax.cosine_decay_schedule(config.learning_rate, decay_steps)
    else:  # "linear", the last of SCHEDULES (OptimizerConfig accepts no other name)
        main = optax.linear_schedule(config.learning_rate, 0.0, decay_steps)
    schedule = main if warmup == 0 else optax.join_schedules(
        [optax.linear_schedule(0.0, config.learning_rate, warmup), main], [warmup])
    adamw = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)
    if config.max_grad_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adamw)


# --- The step ------------------------------------------------------------------------------

def make_train_step(split: SplitModel, loss_config: LossConfig, optimizer: optax.GradientTransformation,
                    ) -> Callable[[Any, TrainState, Array, Array], tuple[TrainState, dict]]:
    """Returns step(frozen, state, tokens [A, 2B, T], mask [A, 2B, T]) -> (state, metrics).

    Dropout keys are a pure function of (state.dropout_key, step, microbatch), so a resumed run
    draws exactly the masks the uninterrupted run would have drawn.
    """

    def step(frozen, state: TrainState, tokens: Array, mask: Array):
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), state.step)

        def microbatch_grads(carry, inputs):
            grad_sum, loss_sum, metric_sum = carry
            index, mb_tokens, mb_mask = inputs

            def loss_of(lora):
                model = split.merge(lora, frozen)
                # One key per dropout stream, split over the layers of a stacked one.
                nnx.reseed(model, dropout=jax.random.fold_in(step_key, index), policy="match_shape")
                base = None
                if loss_config.kl_to_base_weight > 0:
                    zero_lora = jax.tree.map(jnp.zeros_like, lora)
                    base = split.merge(jax.lax.stop_gradient(zero_lora), frozen, training=False)
                return soo_loss(model, mb_tokens, mb_mask, loss_config, base)

            (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.lora)
            grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
            metric_sum = jax.tree.map(jnp.add, metric_sum, metrics)
            return (grad_sum, loss_sum + loss, metric_sum), None

        num_micro = tokens.shape[0]
        zeros = jax.tree.map(jnp.zeros_like, state.lora)
        metric_zeros = {name: jnp.zeros(()) for name in metric_names(loss_config)}
        (grads, loss, metrics), _ = jax.lax.scan(
            microbatch_grads, (zeros, jnp.zeros(()), metric_zeros),
            (jnp.arange(num_micro), tokens, mask))
        grads = split.mask_gradients(grads)  # rows of layers without an adapter: no update, no norm
        if loss_config.microbatch_reduction == "mean":
            grads = jax.tree.map(lambda g: g / num_micro, grads)
        loss = loss / num_micro
        metrics = {k: v / num_micro for k, v in metrics.items()}
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, new_opt_state = optimizer.update(grads, state.opt_state, state.lora)
        new_lora = optax.apply_updates(state.lora, updates)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(step=state.step + jnp.where(finite, 1, 0),
                               lora=keep(new_lora, state.lora),
                               opt_state=keep(new_opt_state, state.opt_state), dropout_key=state.dropout_key)
        return new_state, {"loss": loss, "grad_norm": grad_norm, "finite": finite, **metrics}

    return step


def init_train_state(split: SplitModel, optimizer: optax.GradientTransformation, *,
                     dropout_seed: int = 0) -> TrainState:
    # Copies: a donating step deletes the state's arrays, and these are also the model's.
    lora = {k: jnp.copy(v) for k, v in split.initial_lora.items()}
    return TrainState(step=jnp.zeros((), jnp.int32), lora=lora, opt_state=optimizer.init(lora),
                      dropout_key=jax.random.key_data(jax.random.key(dropout_seed)))


# --- Shardings -----------------------------------------------------------------------------

@dataclasses.dataclass
class StepShardings:
    frozen: Any
    state: Any
    batch: NamedSharding


def plan_shardings(split: SplitModel, optimizer: optax.GradientTransformation, mesh: Mesh,
                   rules: Rules = DEFAULT_RULES) -> StepShardings:
    """Shardings for every step input, all derived from the logical-axis rules."""
    replicated = NamedSharding(mesh, PartitionSpec())
    frozen = state_shardings(split.frozen, mesh, rules)
    axes = split.lora_logical_axes()
    lora = {k: NamedSharding(mesh, logical_to_spec(axes[k], rules, mesh, v.shape))
            for k, v in split.initial_lora.items()}
    abstract_opt = jax.eval_shape(optimizer.init, split.initial_lora)
    opt = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, lora,
                                transform_non_params=lambda _: replicated)
    state = TrainState(step=replicated, lora=lora, opt_state=opt, dropout_key=replicated)
    # Microbatch axis unsharded; pair rows over the data-parallel axes.
    batch = NamedSharding(mesh, PartitionSpec(None, *logical_to_spec(("batch", "length"), rules, mesh)))
    return StepShardings(frozen=frozen, state=state, batch=batch)


def jit_train_step(step_fn, shardings: StepShardings | None):
    if shardings is None:
        return jax.jit(step_fn, donate_argnums=(1,))
    metrics_sharding = NamedSharding(shardings.batch.mesh, PartitionSpec())
    return jax.jit(step_fn, donate_argnums=(1,),
                   in_shardings=(shardings.frozen, shardings.state, shardings.batch, shardings.batch),
                   out_shardings=(shardings.state, metrics_sharding))
