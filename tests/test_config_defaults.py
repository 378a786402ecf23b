"""Each default is written once, in its dataclass: the config sections built from the dataclasses
(soo_jax.checks.defaults) hold exactly their defaults, and read back they are the dataclasses'
defaults."""

import dataclasses

import pytest

from soo_jax import checks


def test_the_training_sections_are_their_dataclasses_defaults():
    from soo_jax.lora import LoRAConfig
    from soo_jax.soo import LossConfig
    from soo_jax.train import config as run_config
    from soo_jax.train.step import OptimizerConfig

    c = run_config.base_config()
    assert run_config.lora_config(c) == LoRAConfig()
    assert run_config.loss_config(c) == LossConfig()
    assert run_config.optimizer_config(c, total_steps=OptimizerConfig.total_steps) == OptimizerConfig()
    assert run_config.train_config(c) == run_config.TrainConfig()
    assert run_config.model_settings(c) == run_config.ModelSettings()
    assert run_config.data_settings(c) == run_config.DataSettings()
    assert set(c.train) == {f.name for f in dataclasses.fields(run_config.TrainConfig)}
    assert set(c.model) == {f.name for f in dataclasses.fields(run_config.ModelSettings)}
    assert set(c.data) == {f.name for f in dataclasses.fields(run_config.DataSettings)}
    assert set(c.loss) == {f.name for f in dataclasses.fields(LossConfig)}
    assert set(c.optimizer) == {f.name for f in dataclasses.fields(OptimizerConfig)} - {"total_steps"}
    assert set(c.lora) == {f.name for f in dataclasses.fields(LoRAConfig)} - {"param_dtype"}


def test_the_rl_sections_are_their_dataclasses_defaults():
    from soo_jax.rl import config as rl_config
    from soo_jax.rl.maddpg.core import MADDPGHyper
    from soo_jax.rl.soo import SOOConfig

    c = rl_config.base_config()
    assert rl_config.maddpg_hyper(c) == MADDPGHyper()
    assert rl_config.soo_config(c, "soo") == SOOConfig()
    assert set(c.maddpg) == {f.name for f in dataclasses.fields(MADDPGHyper)} - {"episode_length"}


def test_defaults_names_a_missing_default_and_an_unknown_field():
    @dataclasses.dataclass
    class Example:
        required: int
        listed: tuple = dataclasses.field(default_factory=lambda: (1,))

    assert checks.defaults(Example, exclude=("required",)) == {"listed": (1,)}
    with pytest.raises(TypeError, match="Example.required has no default"):
        checks.defaults(Example)
    with pytest.raises(TypeError, match=r"no field \['typo'\]"):
        checks.defaults(Example, exclude=("required", "typo"))


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, "config.train.seed: must be in [0, 4294967295], got -1"),
    ("epochs", 0, "config.train.epochs: must be >= 1, got 0"),
    ("max_to_keep", 0, "config.train.max_to_keep: must be >= 1, got 0"),
    ("grad_accum", 3, "config.train.batch_size: 4 pairs do not split into 3 microbatches (train.grad_accum); "
                      "use a multiple of it"),
    ("out_dir", " ", "config.train.out_dir: must name an output directory, got ' '"),
])
def test_the_train_section_is_checked_by_its_dataclass(key, value, message):
    from soo_jax.train import config as run_config

    c = run_config.base_config()
    c.train[key] = value
    with pytest.raises(ValueError) as err:
        run_config.validate(c)
    assert str(err.value) == message
    typed = run_config.train_config(run_config.base_config())
    assert isinstance(typed.seed, int) and typed.evaluate is True


@pytest.mark.parametrize("key, value, message", [
    ("model.dtype", "float64", "config.model.dtype: 'float64' is not one of ('float32', 'bfloat16')"),
    ("model.param_dtype", "int8", "config.model.param_dtype: 'int8' is not one of ('float32', 'bfloat16') or ''"),
    ("model.remat", "most", "config.model.remat: 'most' is not one of ('none', 'full', 'dots_saveable', "
                            "'dots_with_no_batch_dims_saveable', 'save_o_proj')"),
    ("model.path", "", "config.model.path: must be a model directory, a .gguf file or 'embedded', got ''"),
    ("data.pairing", "shuffled", "config.data.pairing: 'shuffled' is not one of ('matched', 'mismatched')"),
    ("data.max_length", 0, "config.data.max_length: must be >= 1, got 0"),
])
def test_the_model_and_data_sections_are_checked_by_their_dataclasses(key, value, message):
    from soo_jax.train import config as run_config

    c = run_config.base_config()
    section, name = key.split(".")
    c[section][name] = value
    with pytest.raises(ValueError) as err:
        run_config.validate(c)
    assert str(err.value) == message
    typed = run_config.model_settings(run_config.base_config())
    assert typed.scan_layers is True and typed.remat == "none"
