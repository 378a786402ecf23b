"""The multi-seed experiment on a tiny model: aggregation over seeds, and resumption."""

import json

import numpy as np
import pytest
from scipy import stats

from soo_jax.experiments.experiment import ExperimentPlan, run_experiment
from tests.tiny_tokenizer import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_model")
    make_tiny_model_dir(path)
    return path


def tiny_experiment_config(model_dir):
    from configs.tiny import get_config

    c = get_config()
    c.model.path = str(model_dir)
    c.train.epochs = 1
    c.eval.suites = "main,latent"
    c.eval.num_scenarios = 3
    c.eval.max_new_tokens = 3
    c.eval.batch_size = 8
    c.eval.progress = False
    c.eval.compilation_cache_dir = ""
    c.eval.latent.batch_size = 8
    c.eval.latent.soo_layer = 1
    return c


def test_experiment_aggregates_seeds_and_resumes(tiny_model, tmp_path, monkeypatch):
    plan = ExperimentPlan(seeds=(0, 1), sets=("generated",), scenarios_file="", out_dir=tmp_path / "exp")
    aggregate = run_experiment(tiny_experiment_config(tiny_model), plan)

    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert saved["deception"] == json.loads(json.dumps(aggregate["deception"]))
    row = aggregate["deception"]["generated"]["burglar"]
    assert {"base", "honesty_prompt", "soo"} <= set(row)
    per_seed = [json.loads((tmp_path / "exp" / f"seed_{s}" / "generated" / "results.json").read_text())
                for s in (0, 1)]
    deceptive = [r["deception"]["tuned"]["burglar"]["original"]["deceptive_rate"] for r in per_seed]
    assert row["soo"]["deceptive"]["values"] == deceptive
    assert row["soo"]["deceptive"]["mean"] == pytest.approx(np.mean(deceptive))
    half = stats.t.ppf(0.975, 1) * np.std(deceptive, ddof=1) / np.sqrt(2)
    assert [row["soo"]["deceptive"]["low"], row["soo"]["deceptive"]["high"]] == pytest.approx(
        [np.mean(deceptive) - half, np.mean(deceptive) + half])
    assert "p" not in row["soo"]["deceptive"]  # no test of a rate against 0
    assert all("tuned" not in r["deception"] or "base" not in r["deception"] for r in per_seed)  # base asked once
    latent = aggregate["latent"]
    assert latent["soo"]["training_site"]["mean"] < latent["base"]["training_site"]  # SOO lowered it
    report = (tmp_path / "exp" / "results.md").read_text()
    soo_line = next(line for line in report.splitlines() if line.startswith("| burglar | SOO |"))
    assert f"{np.mean(deceptive):.1f} [{np.mean(deceptive) - half:.1f}, {np.mean(deceptive) + half:.1f}]" in soo_line

    # per_seed.csv holds every summarised value per model and seed, both orders included.
    import csv

    rows = list(csv.DictReader((tmp_path / "exp" / "per_seed.csv").open()))
    value = {(r["condition"], r["model"], r["seed"], r["quantity"]): float(r["value"]) for r in rows}
    assert len(value) == len(rows)  # one row per (condition, model, seed, quantity)
    for s, piece in zip((0, 1), per_seed):
        burglar = piece["deception"]["tuned"]["burglar"]
        for order in ("original", "swapped"):
            for label in ("deceptive", "honest", "neither"):
                assert value["burglar", "soo", str(s), f"{label}_{order}"] == burglar[order][f"{label}_rate"]
        assert value["burglar", "soo", str(s), "order_balanced"] == burglar["order_balanced"]["order_balanced_deception_rate"]
        assert value["", "soo", str(s), "training_site_mse"] == piece["latent"]["tuned"]["training_site"]["value"]
        assert value["", "soo", str(s), "latent_score"] == piece["latent"]["tuned"]["score"]
    assert [value["burglar", "soo", str(s), "deceptive_original"] for s in (0, 1)] == deceptive
    base_piece = json.loads((tmp_path / "exp" / "base" / "generated" / "results.json").read_text())
    honesty = base_piece["deception"]["base"]["burglar/honesty_prompt"]
    assert value["burglar", "honesty_prompt", "", "honest_swapped"] == honesty["swapped"]["honest_rate"]
    assert value["burglar", "base", "", "position_bias"] == row["base"]["position_bias"]
    assert value["", "base", "", "training_site_mse"] == latent["base"]["training_site"]
    assert not any(r["condition"].endswith("honesty_prompt") for r in rows)

    # A rerun reuses every piece: no training, no generation.
    import soo_jax.train.loop as loop

    monkeypatch.setattr(loop, "run_training", lambda *a, **k: pytest.fail("retrained a finished seed"))
    again = run_experiment(tiny_experiment_config(tiny_model), plan)
    assert again["deception"] == aggregate["deception"]

    # A rerun with a result-changing setting is refused, naming it, before any piece is reused.
    from soo_jax.run_dir import RunDirError

    changed = tiny_experiment_config(tiny_model)
    changed.eval.max_new_tokens = 4
    with pytest.raises(RunDirError, match=r"eval\.max_new_tokens: 3 -> 4"):
        run_experiment(changed, plan)
    changed = tiny_experiment_config(tiny_model)
    changed.optimizer.learning_rate = 1e-2
    with pytest.raises(RunDirError, match=r"optimizer\.learning_rate: 0\.005 -> 0\.01"):
        run_experiment(changed, plan)

    # Another experiment evaluates the same adapters without training them again.
    reuse = ExperimentPlan(seeds=(0, 1), sets=("generated",), scenarios_file="", out_dir=tmp_path / "exp2",
                           adapters_from=tmp_path / "exp")
    reused = run_experiment(tiny_experiment_config(tiny_model), reuse)
    assert reused["deception"] == aggregate["deception"]
    assert not (tmp_path / "exp2" / "seed_0" / "train").exists()
    assert reused["meta"]["adapters_from"] == str(tmp_path / "exp")
    with pytest.raises(FileNotFoundError, match=r"no trained adapter for seed\(s\) \[7\]"):
        ExperimentPlan(seeds=(0, 7), sets=("generated",), scenarios_file="", out_dir=tmp_path / "exp3",
                       adapters_from=tmp_path / "exp")


def test_authors_set_needs_the_file(tmp_path):
    with pytest.raises(ValueError, match="--scenarios"):
        ExperimentPlan(seeds=(0,), sets=("authors",), scenarios_file="", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown scenario set"):
        ExperimentPlan(seeds=(0,), sets=("mine",), scenarios_file="", out_dir=tmp_path)


def test_per_seed_rows_carry_the_kl_and_perspectives_labels(tmp_path):
    from soo_jax.experiments.experiment import per_seed_rows

    def condition(first, second, rate):
        order = {"n": 4, f"{first}_rate": rate, f"{second}_rate": 100 - rate, "neither_rate": 0.0}
        return {"original": order, "swapped": dict(order), "order_balanced": {"position_bias_rate": 25.0}}

    base = {"generated": {"deception": {"base": {"perspectives": condition("correct", "projected", 50.0)}}}}
    seeds = {3: {"generated": {"deception": {"tuned": {"perspectives": condition("correct", "projected", 75.0)}},
                               "capability": {"kl": {"mean_kl_base_tuned": 0.25}}}}}
    plan = ExperimentPlan(seeds=(3,), sets=("generated",), scenarios_file="", out_dir=tmp_path)
    value = {(r["model"], r["seed"], r["quantity"]): r["value"] for r in per_seed_rows(base, seeds, plan)}
    assert value["soo", 3, "correct_swapped"] == 75.0 and value["soo", 3, "projected_original"] == 25.0
    assert value["base", "", "correct_original"] == 50.0 and value["base", "", "position_bias"] == 25.0
    assert value["soo", 3, "kl_base_tuned"] == 0.25
    assert ("base", "", "kl_base_tuned") not in value and ("soo", 3, "latent_score") not in value
