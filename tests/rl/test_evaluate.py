"""The paper's experiment end to end on the tiny config (configs/rl_tiny.py): the evaluation's
per_seed.csv holds every per-seed value of its results.json, and its report gives t-intervals."""

import csv
import pathlib

import numpy as np
import pytest

from soo_jax.rl import config as config_lib
from soo_jax.rl import evaluate, experiment, stats
from soo_jax.run_dir import read_json


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = config_lib.tiny_config()
    config.workdir = str(tmp_path_factory.mktemp("rl") / "rl_tiny")
    experiment.run(config, log=lambda *a, **k: None)
    out = pathlib.Path(config.workdir) / "evaluate"
    return config, out, read_json(out / "results.json")


def per_seed_values(out):
    rows = list(csv.DictReader((out / "per_seed.csv").open()))
    values = {(r["model"], int(r["seed"]), r["quantity"]): float(r["value"]) for r in rows}
    assert len(values) == len(rows)  # one row per (model, seed, quantity)
    assert {r["set"] for r in rows} == {"rl_tiny"}
    return values


@pytest.mark.slow
def test_per_seed_csv_holds_every_per_seed_value_of_the_results(tiny_run):
    config, out, results = tiny_run
    values = per_seed_values(out)
    seeds = list(config.seeds)
    for cond in evaluate.CONDITIONS:
        for quantity in ("trap_rate", "deceptive_entries", "return_adversary", "return_blue_deceptive_reward"):
            assert [values[(cond, s, quantity)] for s in seeds] == results["conditions"][cond][quantity]["per_seed"]
    soo_vs_honest = results["behavioural_difference"]["SOO vs Honest"]["per_seed"]
    assert [values[("soo", s, "behavioural_difference_vs_honest")] for s in seeds] == soo_vs_honest
    classification = results["classification"]
    last = classification["episode_counts"][-1]
    assert ([values[("honest", s, f"classified_at_{last}")] for s in seeds]
            == [per_seed[-1] for per_seed in classification["accuracy_per_training_seed"]])
    soo_accuracy = np.asarray(classification["soo_finetuned_vs_deceptive_accuracy_per_training_seed"])
    np.testing.assert_allclose(soo_accuracy.mean(axis=0), classification["soo_finetuned_vs_deceptive_accuracy_mean"])
    assert [values[("soo", s, "mean_soo")] for s in seeds] == classification["mean_soo_per_training_seed"]["soo"]


@pytest.mark.slow
def test_the_report_gives_t_intervals_and_a_rerun_rewrites_nothing(tiny_run):
    config, out, results = tiny_run
    trap = results["conditions"]["soo"]["trap_rate"]
    lo, hi = stats.t_ci(trap["per_seed"])
    assert trap["ci95"] == pytest.approx([lo, hi])
    report = (out / "results.md").read_text()
    assert f"| soo | {trap['mean']:.3f} [{lo:.3f}, {hi:.3f}] |" in report
    difference = results["behavioural_difference"]["SOO vs Honest"]
    assert f"| SOO vs Honest | {difference['mean']:.1f} [{difference['ci95'][0]:.1f}, " in report

    before = (out / "per_seed.csv").read_text()
    (out / "per_seed.csv").unlink()
    evaluate.run_evaluation_stage(config, log=lambda *a, **k: None)  # finished: writes only the missing file
    assert (out / "per_seed.csv").read_text() == before
