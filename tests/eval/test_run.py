"""soo_jax.eval.run.evaluate in process: one evaluation into a directory, reused when asked again
with the same settings, refused (naming the setting) with others."""
import importlib.util
import json
import pathlib

import pytest

from soo_jax.run_dir import RunDirError

REPO = pathlib.Path(__file__).resolve().parents[2]


def tiny_eval_config(model_dir, out_dir, cache_dir):
    spec = importlib.util.spec_from_file_location("eval_tiny", REPO / "configs" / "eval_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.path = str(model_dir)
    config.eval.suites = "forced_choice"
    config.eval.out_dir = str(out_dir)
    config.eval.compilation_cache_dir = str(cache_dir)
    return config


def test_evaluate_writes_reuses_and_refuses_other_settings(tiny_model_dir, tiny_adapter_dir, tmp_path, capsys):
    from soo_jax.eval.run import evaluate

    config = tiny_eval_config(tiny_model_dir, tmp_path / "out", tmp_path / "cache")
    paths = evaluate(config, adapter=str(tiny_adapter_dir), argv=["test"])
    records = [json.loads(line) for line in pathlib.Path(paths["forced_choice"]).read_text().splitlines()]
    # 3 scenarios x 2 room orders x (base, tuned)
    assert len(records) == 12 and {r["view"] for r in records} == {"base", "tuned"}
    results = json.loads(pathlib.Path(paths["json"]).read_text())
    assert results["meta"]["adapter"] == str(tiny_adapter_dir) and results["meta"]["argv"] == ["test"]
    assert "loading" in capsys.readouterr().err

    assert evaluate(config, adapter=str(tiny_adapter_dir)) == paths
    assert "already holds these results" in capsys.readouterr().err
    config.eval.progress = True  # changes no result: still the same results
    assert evaluate(config, adapter=str(tiny_adapter_dir)) == paths
    config.eval.num_scenarios = 2
    with pytest.raises(RunDirError, match="eval.num_scenarios: 3 -> 2"):
        evaluate(config, adapter=str(tiny_adapter_dir))
