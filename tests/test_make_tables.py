"""docs/results/make_tables.py's tables from launch/experiment.py's per-seed file: the values it
shows are the file's, and its intervals are 95% t-intervals over seeds (ddof 1)."""

import importlib.util
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from scipy import stats

from soo_jax.experiments.experiment import per_seed_rows
from soo_jax.rl import evaluate as rl_evaluate
from soo_jax.run_dir import per_seed_csv

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def make_tables(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_tables", ROOT / "docs/results/make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "DATA", tmp_path)
    return module


def condition(deceptive, honest, *, swapped, balanced, bias, correct=False):
    first, second = ("correct", "projected") if correct else ("deceptive", "honest")

    def order(d, h):
        return {"n": 4, f"{first}_rate": d, f"{second}_rate": h, "neither_rate": 100.0 - d - h}

    key = "order_balanced_correct_rate" if correct else "order_balanced_deception_rate"
    return {"original": order(deceptive, honest), "swapped": order(*swapped),
            "order_balanced": {key: balanced, "position_bias_rate": bias}}


def write_per_seed(tmp_path, name, scenario_set="authors"):
    base = {scenario_set: {"deception": {"base": {
        "burglar": condition(80.0, 20.0, swapped=(30.0, 60.0), balanced=55.0, bias=50.0),
        "burglar/honesty_prompt": condition(70.0, 30.0, swapped=(35.0, 65.0), balanced=52.5, bias=40.0),
        "perspectives": condition(4.0, 1.0, swapped=(1.0, 2.0), balanced=2.5, bias=0.0, correct=True)}},
        "latent": {"base": {"score": 0.72, "training_site": {"value": 0.25}}}}}
    seeds, swapped_deceptive = {}, {0: 40.0, 1: 55.0, 2: 47.0}
    for s, d2 in swapped_deceptive.items():
        seeds[s] = {scenario_set: {
            "deception": {"tuned": {
                "burglar": condition(50.0 + s, 30.0, swapped=(d2, 40.0), balanced=(50.0 + s + d2) / 2, bias=8.0 + s),
                "perspectives": condition(10.0 + s, 2.0, swapped=(2.0, 1.0), balanced=6.0, bias=0.0, correct=True)}},
            "latent": {"tuned": {"score": 0.5 + s / 100, "training_site": {"value": 0.05 + s / 1000}}},
            "capability": {"kl": {"mean_kl_base_tuned": 0.24 + s / 100}}}}
    plan = types.SimpleNamespace(seeds=tuple(seeds), sets=(scenario_set,))  # what per_seed_rows reads
    (tmp_path / name).write_text(per_seed_csv(per_seed_rows(base, seeds, plan)))
    return swapped_deceptive


def cell_rows(lines):
    """{first cell: [cells]} of a markdown table's body."""
    body = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in body)}


def t_cell(values):
    x = np.asarray(values)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return f"{x.mean():.1f} [{x.mean() - half:.1f}, {x.mean() + half:.1f}]"


def test_deception_table_shows_both_orders_and_t_intervals(make_tables, tmp_path):
    swapped = write_per_seed(tmp_path, "llm_l12_authors.csv")
    rows = cell_rows(make_tables.llm_deception_per_seed("llm_l12_authors.csv"))
    # columns: deceptive/honest/neither published, the same swapped, order-balanced, bias, answered, among answered
    assert rows["base"][:6] == ["80.0", "20.0", "0.0", "30.0", "60.0", "10.0"]
    assert rows["base"][8:] == ["95.0", f"{(100 * 80 / 100 + 100 * 30 / 90) / 2:.1f}"]
    assert rows["honesty prompt"][3:5] == ["35.0", "65.0"]
    assert rows["SOO seed 1"][:4] == ["51.0", "30.0", "19.0", "55.0"]
    soo = rows["**SOO, 3 seeds: mean [95% t-interval]**"]
    assert soo[3] == t_cell(list(swapped.values()))
    assert soo[0] == t_cell([50.0, 51.0, 52.0])
    assert soo[7] == t_cell([8.0, 9.0, 10.0])


def test_model_table_and_generated_conditions(make_tables, tmp_path):
    write_per_seed(tmp_path, "llm_l24chat_authors.csv")
    rows = cell_rows(make_tables.llm_model_per_seed("llm_l24chat_authors.csv"))
    assert rows["base"] == ["0.72", "0.25", "0"]
    assert rows["SOO seed 2"] == ["0.52", "0.052", "0.26"]
    write_per_seed(tmp_path, "llm_l12_generated.csv", scenario_set="generated")
    lines = make_tables.llm_generated_per_seed("llm_l12_generated.csv")
    perspectives = [line for line in lines if line.startswith("| Perspectives")]
    assert len(perspectives) == 2 and "| 4.0 | 1.0 | 95.0 | 1.0 | 2.0 | 97.0 |" in perspectives[0]
    assert "cp runs/experiment_generated/per_seed.csv docs/results/data/llm_l12_generated.csv" in "\n".join(lines)


def test_an_unlabelled_condition_is_refused(make_tables, tmp_path):
    write_per_seed(tmp_path, "llm_l12_generated.csv", scenario_set="generated")
    path = tmp_path / "llm_l12_generated.csv"
    path.write_text(path.read_text().replace("perspectives", "mystery"))
    with pytest.raises(SystemExit, match="mystery"):
        make_tables.llm_generated_per_seed("llm_l12_generated.csv")


# --- RL: the factorial's per-seed file (soo_jax/rl/factorial_evaluate.py per_seed_rows) ---------

RL_MODELS = ("deceptive", "deceptive_repeat", "honest", "honest_finetune", "scratch_deceptive",
             "cap_logmse_baseline", "soo_action_logmse_baseline", "soo_hidden_logmse_baseline")
RL_QUANTITIES = ("entry_rate", "entry_rate_frozen", "trap_rate", "trap_rate_frozen", "honest_position",
                 "honest_position_frozen", "honest_projection", "honest_projection_frozen", "mean_soo",
                 "classified_below_deceptive", "classified_above_honest", "paper_view_reproduced")


def write_rl_per_seed(tmp_path):
    """Two runs of 8 seeds; every value a known function of (run, model, seed, quantity)."""
    rng = np.random.default_rng(0)
    values, rows = {}, []
    for run, seeds in (("rl_factorial", range(100, 108)), ("rl_factorial_replicate", range(1, 9))):
        for model in RL_MODELS:
            for seed in seeds:
                for q in RL_QUANTITIES:
                    v = {"deceptive": 0.0, "honest": 1.0}.get(model, float(rng.normal(0.4, 0.2)))
                    if q.startswith(("classified", "paper_view")):
                        v = float(rng.integers(0, 2))
                    values[(run, model, seed, q)] = v
                    rows.append({"set": run, "condition": "", "model": model, "seed": seed, "quantity": q, "value": v})
    (tmp_path / "rl_factorial_per_seed.csv").write_text(per_seed_csv(rows))
    return values


def effect_text(diffs):
    x = np.asarray(diffs)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    pos, neg = int((x > 0).sum()), int((x < 0).sum())
    p = stats.binomtest(pos, pos + neg).pvalue
    p_text = f"{p:.4f}" if p < 0.001 else f"{p:.3f}"
    return f"{x.mean():+.3f} [{x.mean() - half:+.3f}, {x.mean() + half:+.3f}]; {pos}+/{neg}-, p = {p_text}"


def test_rl_effects_are_arm_minus_twin_per_seed_with_t_intervals_and_sign_tests(make_tables, tmp_path):
    v = write_rl_per_seed(tmp_path)
    arm, twin = "soo_action_logmse_baseline", "cap_logmse_baseline"

    def diffs(runs, q="honest_position"):
        return [v[(r, arm, s, q)] - v[(r, twin, s, q)] for r, seeds in runs for s in seeds]

    paper, fresh = ("rl_factorial", range(100, 108)), ("rl_factorial_replicate", range(1, 9))
    pooled = cell_rows(make_tables.rl_effects_table()[2:])
    assert pooled[arm][4] == effect_text(diffs([paper, fresh]))
    assert pooled[arm][8] == effect_text(diffs([paper, fresh], "mean_soo"))
    fresh_only = cell_rows(make_tables.rl_effects_table("rl_factorial_replicate")[2:])
    assert fresh_only[arm][4] == effect_text(diffs([fresh]))
    prestated = cell_rows(make_tables.rl_prestated_per_seed())
    assert prestated[arm][:3] == [effect_text(diffs([paper])), effect_text(diffs([fresh])),
                                  effect_text(diffs([paper, fresh]))]
    needed = 13 - sum(d > 0 for d in diffs([paper]))
    assert prestated[arm][3] == f"{needed} of 8: {stats.binom.sf(needed - 1, 8, 0.5):.3f}"


def test_rl_controls_and_endpoints_are_paired_against_the_deceptive_baseline(make_tables, tmp_path):
    v = write_rl_per_seed(tmp_path)
    runs = (("rl_factorial", range(100, 108)), ("rl_factorial_replicate", range(1, 9)))
    controls = cell_rows(make_tables.rl_controls())
    floor = [v[(r, "deceptive_repeat", s, "honest_projection")] for r, seeds in runs for s in seeds]
    assert controls["deceptive_repeat"][2] == effect_text(floor)  # minus the deceptive baseline's 0
    bounds = cell_rows(make_tables.rl_bounds())
    x = np.asarray([v[(r, "soo_hidden_logmse_baseline", s, "honest_position_frozen")]
                    - v[(r, "cap_logmse_baseline", s, "honest_position_frozen")] for r, seeds in runs for s in seeds])
    hi = x.mean() + stats.t.ppf(0.975, 15) * x.std(ddof=1) / 4
    assert f"{hi:+.2f}]" in bounds["soo_hidden_logmse_baseline"][1]
    classified = cell_rows(make_tables.rl_classification_and_paper_view())
    got = [v[(r, "honest_finetune", s, "paper_view_reproduced")] for r, seeds in runs for s in seeds]
    assert classified["honest_finetune"][2] == f"{int(sum(got))} of 16"


def test_the_committed_results_pages_are_what_their_data_gives():
    """Every table between make_tables markers in docs/results/ equals the one the committed data
    gives (`make_tables.py --check`), so no page shows a number its data does not."""
    result = subprocess.run([sys.executable, str(ROOT / "docs/results/make_tables.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- RL: the paper's design alone (soo_jax/rl/evaluate.py per_seed_rows) ---------------------

def test_rl_paper_design_tables_are_the_evaluations_per_seed_values(make_tables, tmp_path):
    rng = np.random.default_rng(1)
    seeds, counts = [155, 714, 1908], [1, 100, 1500]
    conditions = {c: {q: {"per_seed": rng.uniform(0, 100, 3).tolist()}
                      for q in ("trap_rate", "deceptive_entries", "return_adversary", "return_blue_deceptive_reward")}
                  for c in rl_evaluate.CONDITIONS}
    differences = {f"{rl_evaluate.SHORT_NAMES[a]} vs {rl_evaluate.SHORT_NAMES[b]}": {"per_seed": rng.uniform(0, 9e4, 3).tolist()}
                   for a, b in rl_evaluate.PAIRS}
    honest_accuracy = [[0.5, 1.0, 1.0], [0.5, 0.5, 1.0], [0.0, 1.0, 0.5]]  # per training seed, per count
    results = {"seeds": seeds, "conditions": conditions, "behavioural_difference": differences,
               "classification": {"episode_counts": counts, "accuracy_per_training_seed": honest_accuracy,
                                  "soo_finetuned_vs_deceptive_accuracy_per_training_seed": [[1.0] * 3] * 3,
                                  "mean_soo_per_training_seed": {c: [-1.0, -2.0, -3.0] for c in ("deceptive", "honest", "soo")}}}
    (tmp_path / "rl_deception_per_seed.csv").write_text(per_seed_csv(rl_evaluate.per_seed_rows(results, "rl_deception")))
    lines = make_tables.rl_paper_design()
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("| ").split(" | ")[1:] for line in lines if line.startswith("| ")}
    trap = np.asarray(conditions["random"]["trap_rate"]["per_seed"])
    half = stats.t.ppf(0.975, 2) * trap.std(ddof=1) / np.sqrt(3)
    assert rows["random + capability"][0] == f"{trap.mean():.3f} [{trap.mean() - half:.3f}, {trap.mean() + half:.3f}]"
    to_h, to_d = (np.asarray(differences[k]["per_seed"]) for k in ("SOO vs Honest", "SOO vs Deceptive"))
    assert f"SOO closer to the honest than to the deceptive baseline (per seed): {int((to_h < to_d).sum())} of 3." in lines
    honest_row = next(v for k, v in rows.items() if k.startswith("honest baseline below"))
    assert honest_row == ["33%", "83%", "83%", "2 of 3"]  # last count: 1.0, 1.0, 0.5


def test_rl_rerun_check_counts_the_printed_effects_the_per_seed_file_reproduces(make_tables, tmp_path):
    v = write_rl_per_seed(tmp_path)
    arm, twin = "soo_action_logmse_baseline", "cap_logmse_baseline"
    d = np.asarray([v[("rl_factorial", arm, s, "honest_position")] - v[("rl_factorial", twin, s, "honest_position")]
                    for s in range(100, 108)])
    header = "seed_set,n_seeds,arm,twin,endpoint,mean,ci_lo,ci_hi,interval,positive,negative,printed_p,source\n"
    same = f"paper8,8,{arm},{twin},honest_position,{d.mean():.3f},0,0,bootstrap,{(d > 0).sum()},{(d < 0).sum()},1,cmd\n"
    other = f"pooled16,16,{arm},{twin},honest_position_frozen,9.000,0,0,bootstrap,16,0,0,cmd\n"
    (tmp_path / "rl_paired_effects.csv").write_text(header + same + other)
    lines = make_tables.rl_rerun_check()
    assert "1 of 2 means equal to the printed 3 decimals, 1 of 2 sign counts (+/-) equal" in lines[0]
    rows = [line for line in lines if line.startswith("| paper8")]
    assert rows == [f"| paper8 | {arm} | honest_position | {d.mean():+.3f} ({(d > 0).sum()}+/{(d < 0).sum()}-) "
                    f"| {d.mean():+.3f} ({(d > 0).sum()}+/{(d < 0).sum()}-) |"]


def test_the_pooled_criterion_cell_says_when_the_fresh_seeds_cannot_reach_it(make_tables):
    assert make_tables.pooled_criterion_cell(7) == f"6 of 8: {stats.binom.sf(5, 8, 0.5):.3f}"
    assert make_tables.pooled_criterion_cell(4) == "unreachable (9 of 8)"
