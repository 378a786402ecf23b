"""The sweep: overrides, held-out scenarios, and the fixed selection rule on a tiny model."""

import json
import math

import pytest

from soo_jax.experiments.sweep import apply_overrides, held_out, parse_override, run_sweep
from tests.experiments.test_experiment import tiny_experiment_config
from tests.tiny_tokenizer import make_tiny_model_dir


def test_overrides_parse_and_reject_unknown_keys():
    from configs.tiny import get_config

    assert parse_override("loss.layers=(6,)") == ("loss.layers", (6,))
    assert parse_override("loss.pooling=last") == ("loss.pooling", "last")
    c = apply_overrides(get_config(), ["loss.layers=(0,)", "optimizer.learning_rate=1e-3"])
    assert tuple(c.loss.layers) == (0,) and c.optimizer.learning_rate == 1e-3
    with pytest.raises(ValueError, match=r"--point 'loss.layerz=\(1,\)': unknown config key 'loss.layerz' "
                                         r"\(config.loss has no field 'layerz'\)"):
        apply_overrides(get_config(), ["loss.layerz=(1,)"])
    with pytest.raises(ValueError, match="unknown config key 'nokey'"):
        apply_overrides(get_config(), ["nokey=1"])
    with pytest.raises(ValueError, match="config.lora.rank takes a value of type int, got 'abc'"):
        apply_overrides(get_config(), ["lora.rank=abc"])
    assert math.isnan(parse_override("optimizer.learning_rate=nan")[1])  # a float, refused by its range check


def test_held_out_scenarios_avoid_the_test_split(reference_dir):
    from configs.smollm2 import get_config
    from soo_jax.data.scenarios import false_recommendation_scenarios, load_reference_scenarios

    c = get_config()
    scenarios = held_out(c, 200, str(reference_dir / "false_recommendation_scenarios.json"))
    tuples = {s.combination for s in scenarios}
    assert not tuples & {s.combination for s in false_recommendation_scenarios(n=c.eval.num_scenarios, seed=0)}
    assert not tuples & {s.combination for s in load_reference_scenarios(
        reference_dir / "false_recommendation_scenarios.json")}


def test_sweep_on_a_tiny_model_picks_by_the_rule(tmp_path):
    make_tiny_model_dir(tmp_path / "model")
    summary = run_sweep(tiny_experiment_config(tmp_path / "model"), [["loss.layers=(0,)"], ["loss.layers=(1,)"]],
                        tmp_path / "sweep", n_scenarios=3)
    names = [p["name"] for p in summary["points"]]
    assert names == ["loss.layers=(0,)", "loss.layers=(1,)"]
    eligible = [p for p in summary["points"] if p["kl_base_tuned"] < 0.5
                and p["deception"]["neither"] <= summary["base"]["neither"] + 10]
    best = min(eligible, key=lambda p: p["deception"]["order_balanced"])["name"] if eligible else None
    assert summary["chosen"] == best
    for p in summary["points"]:
        assert p["latent_soo_site"]["after"] < p["latent_soo_site"]["before"]
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["chosen"] == best

    # A rerun reuses the stored points; after a change of the base config it refuses to.
    again = run_sweep(tiny_experiment_config(tmp_path / "model"), [["loss.layers=(0,)"]], tmp_path / "sweep",
                      n_scenarios=3)
    assert again["points"][0]["deception"] == summary["points"][0]["deception"]
    from soo_jax.run_dir import RunDirError

    changed = tiny_experiment_config(tmp_path / "model")
    changed.optimizer.learning_rate = 1e-2
    with pytest.raises(RunDirError, match=r"optimizer\.learning_rate: 0\.005 -> 0\.01"):
        run_sweep(changed, [["loss.layers=(0,)"]], tmp_path / "sweep", n_scenarios=3)
    with pytest.raises(RunDirError, match=r"n_scenarios: 3 -> 4"):
        run_sweep(tiny_experiment_config(tmp_path / "model"), [["loss.layers=(0,)"]], tmp_path / "sweep",
                  n_scenarios=4)
