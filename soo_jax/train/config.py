"""The training settings of a run configuration (ml-collections), their defaults, validation, and
typed views.

`base_config()` holds the training sections (model, lora, loss, data, train, optimizer, mesh).
Config files in `configs/` start from `soo_jax.eval.config.base_run_config()`, which adds the
end-of-run evaluation's `eval` section to these, and override what differs; the result is
locked, so a misspelt key in a config file or on the command line (`--config.lora.rnak=4`) is an
error instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from soo_jax import checks
from soo_jax.data.pairs import PAIRINGS
from soo_jax.lora import LoRAConfig
from soo_jax.models.transformer import REMAT_POLICIES
from soo_jax.soo import LossConfig
from soo_jax.train.step import OptimizerConfig

DTYPES = ("float32", "bfloat16")

# The training settings that change no result (a run's manifest leaves them out, so changing one
# resumes the run instead of refusing it): where and how often things are written, whether the
# adapter is exported and the end-of-run evaluation runs (its own settings are checked against
# before_after.json), the mesh shape, and how the layer loop runs (scanned or not, remat: the same
# numbers to fp32 rounding, like the mesh). The evaluation section's own are
# `soo_jax.eval.config.NOT_RESULT_CHANGING`.
NOT_RESULT_CHANGING = ("train.out_dir", "train.checkpoint_every", "train.max_to_keep",
                       "train.export_adapter", "train.evaluate", "train.eval_scenarios", "mesh",
                       "model.scan_layers", "model.remat")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The train section: the run's length, batches, seed and outputs, as the training loop reads
    them (`train_config`)."""

    epochs: int = 15
    batch_size: int = 4  # prompt pairs per optimizer step (global, all microbatches)
    grad_accum: int = 1  # microbatches per step
    seed: int = 0  # LoRA init, dropout and data order
    checkpoint_every: int = 50
    max_to_keep: int = 3
    out_dir: str = "runs/default"
    export_adapter: bool = True
    evaluate: bool = True  # short before/after evaluation at the end
    eval_scenarios: int = 50  # held-out burglar scenarios in that evaluation (x2 room orders)

    def __post_init__(self):
        # Each message starts with the field's name: a run config reports it as `config.train.<field>: ...`.
        # Valid ranges (NaN and infinity never valid).
        ranges = {"seed": dict(integer=True, low=0, high=2**32 - 1)}
        ranges.update({name: dict(integer=True, low=1) for name in (
            "epochs", "batch_size", "grad_accum", "checkpoint_every", "max_to_keep", "eval_scenarios")})
        for name, bounds in ranges.items():
            object.__setattr__(self, name, checks.field_number(name, getattr(self, name), **bounds))
        for name in ("export_adapter", "evaluate"):
            object.__setattr__(self, name, checks.field_flag(name, getattr(self, name)))
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size: {self.batch_size} pairs do not split into {self.grad_accum} microbatches "
                             f"(train.grad_accum); use a multiple of it")
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise ValueError(f"out_dir: must name an output directory, got {self.out_dir!r}")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = ml_collections.ConfigDict(dict(
        path="embedded",       # HF model directory, a .gguf file, "embedded" (SmolLM2-135M-Instruct), or an opt-in name
        dtype="float32",       # compute dtype
        param_dtype="",        # storage dtype of the frozen base; "" = same as dtype
        scan_layers=True,      # lax.scan over the stacked layers (False: a Python loop, for debugging)
        remat="none",          # none | full | dots_saveable | dots_with_no_batch_dims_saveable | save_o_proj (per layer)
    ))
    # The lora, loss, train and optimizer sections are their dataclasses' fields with the defaults
    # those state (`LoRAConfig`, `LossConfig`, `TrainConfig`, `OptimizerConfig`: each field's
    # meaning and valid values).
    c.lora = ml_collections.ConfigDict(dict(
        checks.defaults(LoRAConfig, exclude=("param_dtype",)),  # no setting: trained LoRA weights are float32
        layers=(),  # () = every layer (LoRAConfig's None)
    ))
    c.loss = ml_collections.ConfigDict(checks.defaults(LossConfig))
    c.data = ml_collections.ConfigDict(dict(
        chat_template=False,    # wrap each training prompt as a user turn of the chat template
        pairing="matched",      # "matched" (the paper's pairs) or "mismatched" (self i with other i+1: a control)
        pad_to_multiple_of=8,
        max_length=256,
    ))
    c.train = ml_collections.ConfigDict(checks.defaults(TrainConfig))
    # total_steps is no setting: the run's epochs and batches give it (optimizer_config).
    c.optimizer = ml_collections.ConfigDict(checks.defaults(OptimizerConfig, exclude=("total_steps",)))
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return c


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates the training settings of `config` (other sections are left alone) and locks it."""
    validate(config)
    config.lock()
    return config


def _fail(key: str, message: str):
    raise ValueError(f"config.{key}: {message}")


def _fail_field(section: str, error: ValueError):
    """A config dataclass's "<field>: <problem>" error as `config.<section>.<field>: <problem>`."""
    field, _, message = str(error).partition(": ")
    _fail(f"{section}.{field}" if section else field, message)


def validate(c: ml_collections.ConfigDict) -> None:
    """Every training setting, before anything is loaded. The lora, loss, train and optimizer
    sections are checked by their dataclasses (`LoRAConfig`, `LossConfig`, `TrainConfig`,
    `OptimizerConfig`), once."""
    if c.model.dtype not in DTYPES:
        _fail("model.dtype", f"{c.model.dtype!r} is not one of {DTYPES}")
    if c.model.param_dtype not in DTYPES + ("",):
        _fail("model.param_dtype", f"{c.model.param_dtype!r} is not one of {DTYPES} or ''")
    if c.model.remat not in REMAT_POLICIES:
        _fail("model.remat", f"{c.model.remat!r} is not one of {tuple(REMAT_POLICIES)}")
    if not isinstance(c.model.path, str) or not c.model.path:
        _fail("model.path", f"must be a model directory, a .gguf file or 'embedded', got {c.model.path!r}")
    loss_config(c)
    if c.data.pairing not in PAIRINGS:
        _fail("data.pairing", f"{c.data.pairing!r} is not one of {PAIRINGS}")
    # Valid ranges of the sections without a dataclass of their own (NaN and infinity never valid).
    for key in ("data.pad_to_multiple_of", "data.max_length"):
        section, name = key.split(".")
        try:
            checks.field_number(key, c[section][name], integer=True, low=1)
        except ValueError as e:
            _fail_field("", e)
    for key in ("model.scan_layers", "data.chat_template"):
        section, name = key.split(".")
        try:
            checks.field_flag(key, c[section][name])
        except ValueError as e:
            _fail_field("", e)
    train_config(c)
    optimizer_config(c, total_steps=1)  # the schedule's name is checked here, not after the model has loaded
    for axis in ("data", "fsdp", "tensor"):
        try:
            checks.field_number(f"mesh.{axis}", c.mesh[axis], integer=True)
        except ValueError as e:
            _fail_field("", e)
        if c.mesh[axis] == 0 or c.mesh[axis] < -1:
            _fail(f"mesh.{axis}", f"must be a positive size or -1 (the remaining devices), got {c.mesh[axis]}")
    if [c.mesh[a] for a in ("data", "fsdp", "tensor")].count(-1) > 1:
        _fail("mesh", "at most one axis may be -1")
    lora_config(c)


def validate_for_model(c: ml_collections.ConfigDict, num_layers: int) -> None:
    """The settings whose range is the model's shape (its config.json alone tells it, read before
    anything is written): loss.layers and lora.layers index its `num_layers` layers."""
    for key in ("loss.layers", "lora.layers"):
        section, name = key.split(".")
        try:
            checks.field_indices(key, c[section][name], size=num_layers)
        except ValueError as e:
            _fail_field("", e)


def lora_config(c: ml_collections.ConfigDict) -> LoRAConfig:
    try:
        return LoRAConfig(rank=c.lora.rank, alpha=c.lora.alpha, dropout=c.lora.dropout,
                          targets=tuple(c.lora.targets), layers=tuple(c.lora.layers) or None)
    except ValueError as e:
        _fail_field("lora", e)


def loss_config(c: ml_collections.ConfigDict) -> LossConfig:
    try:
        return LossConfig(objective=c.loss.objective, site=c.loss.site, layers=tuple(c.loss.layers),
                          pooling=c.loss.pooling,
                          kl_mask_padding=bool(c.loss.kl_mask_padding),
                          kl_to_base_weight=float(c.loss.kl_to_base_weight),
                          microbatch_reduction=c.loss.microbatch_reduction)
    except ValueError as e:
        _fail_field("loss", e)


def train_config(c: ml_collections.ConfigDict) -> TrainConfig:
    try:
        return TrainConfig(**{f.name: c.train[f.name] for f in dataclasses.fields(TrainConfig)})
    except ValueError as e:
        _fail_field("train", e)


def optimizer_config(c: ml_collections.ConfigDict, total_steps: int) -> OptimizerConfig:
    o = c.optimizer
    # OptimizerConfig checks each value's type and range (max_grad_norm 0: no clipping).
    values = dict(learning_rate=o.learning_rate, warmup_steps=o.warmup_steps, total_steps=int(total_steps),
                  schedule=o.schedule, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
                  eps=o.eps, max_grad_norm=o.max_grad_norm)
    try:
        return OptimizerConfig(**values)
    except ValueError as e:
        _fail_field("optimizer", e)
