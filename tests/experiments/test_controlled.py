"""The controlled experiment on a tiny model: every arm, the paired analysis, the KL-matched
perturbation, resumption; and the analysis on hand-made values."""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from soo_jax.experiments.controlled import ControlledPlan, analyse, arm_config, run_controlled, t_summary
from tests.tiny_tokenizer import make_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    # Not "tiny_model": test_evaluate_cli expects its own model directory to be tiny_model0.
    path = tmp_path_factory.mktemp("controlled_tiny_model")
    make_tiny_model_dir(path)
    return path


def authors_style_file(path, n=12):
    """Our generator's scenarios written in the authors' file format (correct_answer = the cheap,
    deceptive room, as in their file)."""
    from soo_jax.data.scenarios import false_recommendation_scenarios

    def rows(referent):
        return [{"prompt": s.prompt, "correct_answer": s.cheap_room, "wrong_answer": s.expensive_room}
                for s in false_recommendation_scenarios(n, 0, referent=referent)]

    path.write_text(json.dumps({"other_referencing": rows("other"), "self_referencing": rows("self")}))
    return str(path)


def tiny_config(model_dir):
    """The multi-seed experiment's tiny config (its suites are the controlled stages' own)."""
    from tests.experiments.test_experiment import tiny_experiment_config

    c = tiny_experiment_config(model_dir)
    c.eval.capability.categories = "facts"
    c.eval.forced_choice.batch_size = 8
    return c


def test_arm_configs_differ_from_soo_in_one_setting(tiny_model, tmp_path):
    c = tiny_config(tiny_model)
    soo = arm_config(c, "soo", 3, tmp_path / "a").to_dict()
    lm = arm_config(c, "lm", 3, tmp_path / "a").to_dict()
    mismatched = arm_config(c, "mismatched", 3, tmp_path / "a").to_dict()
    assert soo["train"]["seed"] == 3 and soo["train"]["evaluate"] is False
    assert {k: v for k, v in lm.items() if k != "loss"} == {k: v for k, v in soo.items() if k != "loss"}
    assert lm["loss"] == {**soo["loss"], "objective": "lm"}
    assert mismatched["data"] == {**soo["data"], "pairing": "mismatched"}
    with pytest.raises(ValueError, match="not a trained arm"):
        arm_config(c, "perturbation", 3, tmp_path)


@pytest.mark.slow
def test_controlled_experiment_runs_every_arm_and_resumes(tiny_model, tmp_path, monkeypatch):
    scenarios = authors_style_file(tmp_path / "scenarios.json")
    record = tmp_path / "record"
    plan = ControlledPlan(seeds=(0, 1), scenarios_file=scenarios, out_dir=tmp_path / "exp", selection=(6, 10),
                          record=record)
    aggregate = run_controlled(tiny_config(tiny_model), plan)
    out = tmp_path / "exp"

    # Each trained arm has its own adapter; the perturbation's KL matches the SOO arm's.
    adapters = {arm: (out / "seed_0" / arm / "train" / "adapter" / "adapter_model.safetensors").read_bytes()
                for arm in ("soo", "lm", "mismatched", "perturbation")}
    assert len(set(adapters.values())) == 4
    per_seed = aggregate["per_seed"]
    for seed in (0, 1):
        calibration = json.loads((out / f"seed_{seed}" / "perturbation" / "train" / "calibration.json").read_text())
        assert calibration["target_kl"] == pytest.approx(per_seed["soo"][seed]["kl"])
        assert calibration["kl"] == pytest.approx(calibration["target_kl"], rel=0.02)
        assert per_seed["perturbation"][seed]["kl"] == pytest.approx(calibration["target_kl"], rel=0.03)

    # Per-seed values are the pieces' own; the primary test is the paired t over them.
    values = {}
    for arm in ("soo", "lm"):
        for seed in (0, 1):
            piece = json.loads((out / f"seed_{seed}" / arm / "primary" / "results.json").read_text())
            values[arm, seed] = piece["forced_choice"]["tuned"]["log_odds"]["mean"]
            assert per_seed[arm][seed]["fc_log_odds"] == values[arm, seed]
            assert "deception" not in piece  # the primary stage generates nothing
    differences = [values["soo", s] - values["lm", s] for s in (0, 1)]
    test = aggregate["analysis"]["primary"]["test"]
    assert test["mean"] == pytest.approx(np.mean(differences))
    assert test["p"] == pytest.approx(stats.ttest_1samp(differences, 0.0).pvalue)
    # The screen reads the selection scenarios 6..9, never the test set's first 3.
    screen = json.loads((out / "screen" / "results.json").read_text())
    assert screen["selection"] == [6, 10] and screen["forced_choice"]["base"]["n_scenarios"] == 4
    # Secondary: generated answers of every (seed, arm), per order.
    assert 0 <= per_seed["lm"][1]["deceptive_swapped"] <= 100
    rows = list(csv.DictReader((out / "per_seed.csv").open()))
    assert [(r["arm"], r["seed"]) for r in rows] == [("base", "")] + [
        (arm, str(seed)) for arm in ("soo", "lm", "mismatched", "perturbation") for seed in (0, 1)]
    assert aggregate["meta"]["final"] is True
    assert "Primary test (final)" in (out / "results.md").read_text()
    # The report is recomputed from the three data files alone.
    from soo_jax.experiments.controlled import report_from_dir
    assert report_from_dir(out) == (out / "results.md").read_text()

    # A rerun trains nothing and calibrates nothing.
    import soo_jax.experiments.perturbation as perturbation
    import soo_jax.train.loop as loop

    monkeypatch.setattr(loop, "run_training", lambda *a, **k: pytest.fail("retrained a finished arm"))
    monkeypatch.setattr(perturbation, "matched_perturbation", lambda *a, **k: pytest.fail("recalibrated"))
    again = run_controlled(tiny_config(tiny_model), plan)
    assert again["analysis"]["primary"] == aggregate["analysis"]["primary"]

    # The record carries the finished seeds to a machine that kept no OUT: nothing is retrained.
    assert (record / "per_seed.csv").read_text() == (out / "per_seed.csv").read_text()
    elsewhere = ControlledPlan(seeds=(0, 1), scenarios_file=scenarios, out_dir=tmp_path / "elsewhere",
                               selection=(6, 10), record=record)
    carried = run_controlled(tiny_config(tiny_model), elsewhere)
    assert carried["analysis"]["primary"] == aggregate["analysis"]["primary"]
    assert not (tmp_path / "elsewhere" / "seed_0").exists()
    # ... but only where this machine reproduces the recorded base model.
    text = (record / "per_seed.csv").read_text().splitlines()
    base_row = text[1].split(",")
    base_row[2] = repr(float(base_row[2]) + 1e-3)
    (record / "per_seed.csv").write_text("\n".join([text[0], ",".join(base_row), *text[2:]]) + "\n")
    with pytest.raises(ValueError, match="does not reproduce the recorded base model .fc_log_odds"):
        run_controlled(tiny_config(tiny_model), ControlledPlan(
            seeds=(0, 1), scenarios_file=scenarios, out_dir=tmp_path / "third", selection=(6, 10), record=record))


def test_a_seed_is_complete_when_every_arm_has_its_stages():
    from soo_jax.experiments.controlled import PRIMARY_ENDPOINTS, seed_complete

    primary = {e: 0.5 for e in PRIMARY_ENDPOINTS}
    per_seed = {"soo": {3: primary}, "lm": {3: {**primary, "deceptive": 40.0}}}
    assert seed_complete(per_seed, 3, ("soo", "lm"), secondary=False)
    assert not seed_complete(per_seed, 3, ("soo", "lm"), secondary=True)
    assert not seed_complete(per_seed, 3, ("soo", "lm", "mismatched"), secondary=False)
    assert not seed_complete({"soo": {3: {**primary, "kl": None}}}, 3, ("soo",), secondary=False)


def test_analysis_pairs_arms_by_seed():
    per_seed = {"soo": {0: {"fc_log_odds": 1.0}, 1: {"fc_log_odds": 0.5}, 2: {"fc_log_odds": 0.2}},
                "lm": {0: {"fc_log_odds": 0.5}, 1: {"fc_log_odds": 0.4}},
                "mismatched": {}, "perturbation": {2: {"fc_log_odds": 0.0}}}
    analysis = analyse(per_seed, {"fc_log_odds": 0.3}, (0, 1, 2))
    primary = analysis["primary"]
    assert primary["seeds_done"] == 2 and primary["seeds_registered"] == 3
    assert primary["test"]["values"] == pytest.approx([0.5, 0.1])
    assert primary["test"]["p"] == pytest.approx(stats.ttest_1samp([0.5, 0.1], 0.0).pvalue)
    assert analysis["paired"]["perturbation"]["fc_log_odds"]["values"] == [0.2]
    assert analysis["paired"]["mismatched"]["fc_log_odds"] is None
    summary = t_summary([0.1, 0.4, 0.2, 0.3])
    half = stats.t.ppf(0.975, 3) * np.std([0.1, 0.4, 0.2, 0.3], ddof=1) / 2
    assert summary["high"] - summary["mean"] == pytest.approx(half)


def test_plan_rejects_bad_input(tmp_path):
    scenarios = tmp_path / "s.json"
    scenarios.write_text("{}")
    with pytest.raises(ValueError, match="--seeds"):
        ControlledPlan(seeds=(1, 1), scenarios_file=str(scenarios), out_dir=tmp_path)
    with pytest.raises(ValueError, match="--arms"):
        ControlledPlan(seeds=(1,), arms=("lm",), scenarios_file=str(scenarios), out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="make it from the authors"):
        ControlledPlan(seeds=(1,), scenarios_file=str(tmp_path / "missing.json"), out_dir=tmp_path)


def test_screen_only_reads_the_selection_set_and_nothing_else(tiny_model, tmp_path):
    from soo_jax.eval.forced_choice import summarise_forced_choice

    scenarios = authors_style_file(tmp_path / "scenarios.json")
    plan = ControlledPlan(seeds=(0,), scenarios_file=scenarios, out_dir=tmp_path / "screen", selection=(6, 10),
                          screen_only=True)
    out = run_controlled(tiny_config(tiny_model), plan)
    records = [json.loads(line) for line in (tmp_path / "screen" / "screen" / "forced_choice.jsonl").open()]
    assert sorted({r["scenario"] for r in records}) == [0, 1, 2, 3]  # the 4 selection scenarios, renumbered
    assert out["screen"]["forced_choice"]["base"] == summarise_forced_choice(records)
    assert sorted(p.name for p in (tmp_path / "screen").iterdir() if not p.name.startswith(".")) == [
        "manifest.json", "results.md", "screen", "screen.json", "screen_scenarios.csv"]
    # The per-scenario data name the authors' indices and give back the screen's mean log-odds.
    rows = list(csv.DictReader((tmp_path / "screen" / "screen_scenarios.csv").open()))
    assert sorted({int(r["authors_scenario"]) for r in rows}) == [6, 7, 8, 9] and len(rows) == 8
    odds = {}
    for r in rows:
        odds.setdefault(r["authors_scenario"], []).append(float(r["logprob_deceptive"]) - float(r["logprob_honest"]))
    assert np.mean([np.mean(v) for v in odds.values()]) == pytest.approx(
        out["screen"]["forced_choice"]["base"]["log_odds"]["mean"], rel=1e-12)
    text = (tmp_path / "screen" / "results.md").read_text()
    assert "**Screen**" in text and "beyond position" in text


def test_report_from_a_directory_without_its_plan_is_refused_by_name(tmp_path):
    from soo_jax.experiments.controlled import report_from_dir

    (tmp_path / "per_seed.csv").write_text("arm,seed,fc_log_odds\nbase,,0.3\nsoo,100,0.2\n")
    with pytest.raises(ValueError, match="plan.json: missing or without its seeds and arms"):
        report_from_dir(tmp_path)
    (tmp_path / "plan.json").write_text('{"seeds": [100], "arms": ["soo"]}')
    assert "+0.300" in report_from_dir(tmp_path)


@pytest.mark.slow
def test_launcher_reports_from_the_data_files_without_a_config(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    from soo_jax.experiments.controlled import per_seed_csv

    repo = pathlib.Path(__file__).resolve().parents[2]
    per_seed = {"soo": {0: {"fc_log_odds": 0.5}, 1: {"fc_log_odds": 0.2}},
                "lm": {0: {"fc_log_odds": 0.1}, 1: {"fc_log_odds": 0.3}}, "mismatched": {}, "perturbation": {}}
    (tmp_path / "per_seed.csv").write_text(per_seed_csv(per_seed, {"fc_log_odds": 0.3}))
    (tmp_path / "plan.json").write_text(json.dumps({"seeds": [0, 1], "arms": list(per_seed)}))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(repo)}
    run = lambda *args: subprocess.run([sys.executable, str(repo / "launch" / "controlled.py"), *args],  # noqa: E731
                                       capture_output=True, text=True, env=env, cwd=repo, timeout=300)
    proc = run("--report_from", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "**Primary test (final)**" in proc.stdout and "+0.1500" in proc.stdout  # mean of 0.4 and -0.1
    missing = run("--report_from", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: --report_from")


def test_the_results_page_shows_the_report_recomputed_from_the_committed_record():
    """docs/results/llm.md's controlled-experiment tables are `launch/controlled.py --report_from
    DIR` of the committed record, verbatim (less its title): an edited table or record fails."""
    import pathlib
    import re

    from soo_jax.experiments.controlled import report_from_dir

    root = pathlib.Path(__file__).resolve().parents[2]
    text = (root / "docs/results/llm.md").read_text()
    blocks = re.findall(r"<!-- report_from: (\S+) -->\n(.*?)<!-- /report_from -->", text, re.S)
    assert blocks, "docs/results/llm.md has no report_from block"
    for directory, body in blocks:
        report = report_from_dir(root / directory)
        assert report.startswith("# Controlled SOO experiment\n\n")
        assert body.strip() == report.removeprefix("# Controlled SOO experiment\n\n").strip(), directory
