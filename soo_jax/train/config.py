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
class ModelSettings:
    """The model section: which model, in which dtypes, and how its layer loop runs (`model_settings`)."""

    path: str = "embedded"  # HF model directory, a .gguf file, "embedded" (SmolLM2-135M-Instruct), or an opt-in name
    dtype: str = "float32"  # compute dtype
    param_dtype: str = ""  # storage dtype of the frozen base; "" = same as dtype
    scan_layers: bool = True  # lax.scan over the stacked layers (False: a Python loop, for debugging)
    remat: str = "none"  # a REMAT_POLICIES name, per layer: none | full | dots_saveable | ... | save_o_proj

    def __post_init__(self):
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"path: must be a model directory, a .gguf file or 'embedded', got {self.path!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {DTYPES}")
        if self.param_dtype not in DTYPES + ("",):
            raise ValueError(f"param_dtype: {self.param_dtype!r} is not one of {DTYPES} or ''")
        object.__setattr__(self, "scan_layers", checks.field_flag("scan_layers", self.scan_layers))
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat: {self.remat!r} is not one of {tuple(REMAT_POLICIES)}")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The data section: how the training prompt pairs are built and batched (`data_settings`)."""

    chat_template: bool = False  # wrap each training prompt as a user turn of the chat template
    pairing: str = "matched"  # "matched" (the paper's pairs) or "mismatched" (self i with other i+1: a control)
    pad_to_multiple_of: int = 8
    max_length: int = 256

    def __post_init__(self):
        object.__setattr__(self, "chat_template", checks.field_flag("chat_template", self.chat_template))
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing: {self.pairing!r} is not one of {PAIRINGS}")
        for name in ("pad_to_multiple_of", "max_length"):
            object.__setattr__(self, name, checks.field_number(name, getattr(self, name), integer=True, low=1))


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
    # Every section but the mesh is its dataclass's fields with the defaults it states
    # (`ModelSettings`, `LoRAConfig`, `LossConfig`, `DataSettings`, `TrainConfig`,
    # `OptimizerConfig`: each field's meaning and valid values).
    c.model = ml_collections.ConfigDict(checks.defaults(ModelSettings))
    c.lora = ml_collections.ConfigDict(dict(
        checks.defaults(LoRAConfig, exclude=("param_dtype",)),  # no setting: trained LoRA weights are float32
        layers=(),  # () = every layer (LoRAConfig's None)
    ))
    c.loss = ml_collections.ConfigDict(checks.defaults(LossConfig))
    c.data = ml_collections.ConfigDict(checks.defaults(DataSettings))
    c.train = ml_collections.ConfigDict(checks.defaults(TrainConfig))
    # total_steps is no setting: the run's epochs and batches give it (optimizer_config).
    c.optimizer = ml_collections.ConfigDict(checks.defaults(OptimizerConfig, exclude=("total_steps",)))
    # Written out: data=-1 (every device not given to another axis) differs on purpose from
    # MeshConfig's defaults, which describe one device.
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
    """Every training setting, before anything is loaded. Each section but the mesh is checked by
    its dataclass (`ModelSettings`, `LoRAConfig`, `LossConfig`, `DataSettings`, `TrainConfig`,
    `OptimizerConfig`), once."""
    model_settings(c)
    loss_config(c)
    data_settings(c)
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


def _section(c: ml_collections.ConfigDict, name: str, cls: type):
    try:
        return cls(**{f.name: c[name][f.name] for f in dataclasses.fields(cls)})
    except ValueError as e:
        _fail_field(name, e)


def model_settings(c: ml_collections.ConfigDict) -> ModelSettings:
    return _section(c, "model", ModelSettings)


def data_settings(c: ml_collections.ConfigDict) -> DataSettings:
    return _section(c, "data", DataSettings)


def train_config(c: ml_collections.ConfigDict) -> TrainConfig:
    return _section(c, "train", TrainConfig)


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
