"""Which settings change a result is declared once (soo_jax.train.config.NOT_RESULT_CHANGING and
soo_jax.eval.config.NOT_RESULT_CHANGING): the training run's manifest and both experiments'
leave out exactly those (the training run the whole evaluation section too)."""

import types

import pytest

from soo_jax import run_dir
from soo_jax.eval import config as eval_config_lib
from soo_jax.experiments import controlled, experiment
from soo_jax.train import config as train_config
from soo_jax.train import loop


def _set(config, key: str, value) -> None:
    *sections, name = key.split(".")
    node = config
    for section in sections:
        node = node[section]
    node[name] = value


def _other(key: str, value, tmp_path):
    """A value of the same type as `value` that differs from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        if key.endswith("_file") or key.endswith("_questions"):  # read by content: must exist
            path = tmp_path / key
            path.write_text("other")
            return str(path)
        return value + "x"
    if isinstance(value, (list, tuple)):
        return tuple(value) + (tuple(value)[:1] or (1,))
    raise AssertionError(f"no other value for {key}={value!r}")


def _flat_keys(config) -> dict:
    return run_dir.flatten(config.to_dict())


def _settings_functions(tmp_path):
    scenarios = tmp_path / "scenarios.json"
    scenarios.write_text("[]")
    plan = types.SimpleNamespace(scenarios_file=str(scenarios), adapters_from=None, selection=(6, 10))
    return {
        "train": (lambda c: loop.train_settings(c, tmp_path), (*train_config.NOT_RESULT_CHANGING, "eval")),
        "experiment": (lambda c: experiment.experiment_settings(c, plan), eval_config_lib.run_not_result_changing()),
        "controlled": (lambda c: controlled.experiment_settings(c, plan), eval_config_lib.run_not_result_changing()),
    }


def test_every_key_listed_is_a_setting_of_the_default_config():
    flat = _flat_keys(eval_config_lib.base_run_config())
    assert {"model.scan_layers", "model.remat", "mesh"} <= set(eval_config_lib.run_not_result_changing())
    for key in eval_config_lib.run_not_result_changing():
        assert any(k == key or k.startswith(key + ".") for k in flat), f"{key} is no setting of base_run_config()"


@pytest.mark.parametrize("which", ["train", "experiment", "controlled"])
def test_only_result_changing_settings_change_the_manifest_settings(which, tmp_path):
    settings_of, ignored = _settings_functions(tmp_path)[which]
    default = eval_config_lib.base_run_config()
    before = settings_of(default)
    for key, value in _flat_keys(default).items():
        if key.startswith("eval.latent.soo_"):  # linked to the loss settings (link_latent_training_site)
            continue
        config = eval_config_lib.base_run_config()
        _set(config, key, _other(key, value, tmp_path))
        changed = settings_of(config) != before
        listed = any(key == i or key.startswith(i + ".") for i in ignored)
        assert changed != listed, (f"{which}: changing {key} {'changes' if changed else 'leaves'} the settings, "
                                   f"but it is {'' if listed else 'not '}declared as changing no result")


def test_a_piece_records_its_adapter_by_content(tmp_path):
    from soo_jax.peft_io import ADAPTER_WEIGHTS, adapter_settings

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"weights")
    eval_config = eval_config_lib.base_run_config().eval
    settings = experiment.piece_settings(eval_config, adapter)
    assert settings["adapter.sha256"] == adapter_settings(adapter)["adapter.sha256"] == run_dir.file_digest(
        adapter / ADAPTER_WEIGHTS)
    assert "adapter.sha256" not in experiment.piece_settings(eval_config, None)
