"""The factorial's measurement on hand-made data: normalised grids, paired statistics over seeds,
the three-condition truncation, endpoints and per-pair classification, and the pooling of runs on
disjoint seeds (host NumPy only)."""

import csv
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import rl_factorial
from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl import factorial_evaluate as fe
from soo_jax.rl import factorial_pool, metrics, stats

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_normalised_grids_are_fractions_of_each_seeds_entries():
    # Seed 0: 4 entries, 3 of them (0.9, 0.0) and one (0.1, 0.9); seed 1: 40 copies of seed 0's.
    seed0 = np.array([[0.9, 0.0]] * 3 + [[0.1, 0.9]])
    seed1 = np.repeat(seed0, 10, axis=0)
    grids = metrics.normalised_count_grids([seed0, seed1, np.zeros((0, 2))], grid_size=3)
    # x: 0, .5, 1; y: -1, 0, 1. (0.9, 0) counts at x < .9 and y > 0; (0.1, .9) at x = 0, y = 1.
    expected = np.array([[0, 0, 1.0], [0, 0, 0.75], [0, 0, 0]])
    np.testing.assert_allclose(grids[0], expected)
    np.testing.assert_allclose(grids[1], expected)  # 10x the entries, the same grid
    assert np.isnan(grids[2]).all()  # no entries: no distribution
    raw = np.stack([metrics.deceptive_action_counts(e, 3) for e in (seed0, seed1)])
    assert metrics.behavioural_difference(raw[:1], raw[1:])["mean"] > 0  # raw grids scale with N


def test_honest_position_between_the_baselines():
    d, h = np.zeros((3, 2, 2)), np.ones((3, 2, 2))
    grids = np.stack([d[0], h[0], 0.5 * h[0]])
    np.testing.assert_allclose(metrics.honest_position(grids, d, h), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(metrics.grid_rms_distance(grids, d), [0.0, 1.0, 0.5])


def test_honest_projection_scores_orthogonal_drift_as_zero():
    d, h = np.zeros((4, 2, 2)), np.zeros((4, 2, 2))
    h[:, 0, 0] = 1.0  # the baselines differ in one cell
    grids = np.zeros((4, 2, 2))
    grids[1, 0, 0] = 1.0          # at the honest baseline
    grids[2, 1, 1] = 0.7          # drift orthogonal to the deceptive -> honest axis
    grids[3, 0, 0] = -0.5         # away from honest
    np.testing.assert_allclose(metrics.honest_projection(grids, d, h), [0.0, 1.0, 0.0, -0.5])
    # The ratio endpoint calls a large orthogonal drift halfway; the projection does not move.
    far = np.zeros((1, 2, 2))
    far[0, 1, 1] = 100.0
    assert metrics.honest_position(far, d[:1], h[:1])[0] == pytest.approx(0.5, abs=0.01)
    assert metrics.honest_projection(far, d[:1], h[:1])[0] == 0.0


def test_paired_effect_by_hand():
    a = np.array([3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    effect = stats.paired_effect(a, a - np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 1.0, 2.0]))
    assert effect["mean"] == pytest.approx(1.5)
    lo, hi = effect["ci95"]
    # t-interval, ddof 1: 1.5 -+ t_.975(7 df) * sd / sqrt(8), t from tables: 2.3646
    half = 2.3646 * np.std([1, 2] * 4, ddof=1) / math.sqrt(8)
    assert (lo, hi) == (pytest.approx(1.5 - half, rel=1e-4), pytest.approx(1.5 + half, rel=1e-4))
    assert effect["sign_test"] == {"positive": 8, "negative": 0, "ties": 0, "p": pytest.approx(2 / 256)}
    assert effect["sd"] == pytest.approx(np.std([1, 2] * 4, ddof=1))
    # (t_.975 + t_.80, 7 df) * sd / sqrt(8), t values from tables: 2.3646, 0.8960
    assert effect["mde80"] == pytest.approx((2.3646 + 0.8960) * effect["sd"] / math.sqrt(8), rel=1e-3)
    assert stats.paired_effect(a, a - 1.0)["ci95"] == [1.0, 1.0]  # a constant difference
    # The sign test needs 8 of 8 here: P(all 8 positive) = Phi(mde / sd)^8 = 0.8 at its MDE.
    from scipy import stats as scipy_stats
    sd = effect["sd"]
    assert scipy_stats.norm.cdf(effect["mde80_sign"] / sd) ** 8 == pytest.approx(0.8, rel=1e-6)
    assert effect["mde80_sign"] > effect["mde80"]  # the sign test needs a larger effect than the t-test


def test_sign_test_ties_nans_and_what_n_seeds_can_show():
    assert stats.sign_test([1.0, -1.0, 0.0, np.nan, 2.0]) == {"positive": 2, "negative": 1, "ties": 1,
                                                             "p": pytest.approx(1.0)}
    assert stats.sign_test([-1.0] * 7 + [1.0])["p"] == pytest.approx(2 * 9 / 256)  # 7 of 8: p = 0.07
    assert stats.sign_test_needs(8) == 8  # with 8 seeds only 8/8 reaches 5%
    assert stats.sign_test_needs(16) == 13
    assert stats.sign_test_needs(5) is None  # 5/5 gives p = 0.0625
    assert stats.summarise([1.0, np.nan, 3.0])["n"] == 2


def _config(seeds=(0, 1), threshold_episodes=4):
    config = rl_factorial.get_config("tiny")
    config.seeds = seeds
    config.evaluate.threshold_episodes = threshold_episodes
    config.evaluate.paper_view_eval_seeds = 2
    config.evaluate.grid_size = 3
    config.evaluate.classification_episode_counts = (1, 2)
    config.env.episode_length = 5
    config.arms = {"soo_a": config_lib.arm("soo", twin="cap_a"), "cap_a": config_lib.arm("capability")}
    return config


def _piece(entries_by_seed_episode, trapped, soo_mean, n_seeds=2, episodes=4):
    """A fake rollout piece: entries_by_seed_episode[(seed, episode)] = list of (proj, cos)."""
    rows = [(s, e, x) for (s, e), xs in sorted(entries_by_seed_episode.items()) for x in xs]
    piece = {}
    for view in fe.VIEWS:
        piece[f"{view}_entries"] = np.array([x for _, _, x in rows], np.float32).reshape(-1, 2)
        piece[f"{view}_entry_seed"] = np.array([s for s, _, _ in rows], np.int32)
        piece[f"{view}_entry_episode"] = np.array([e for _, e, _ in rows], np.int32)
        piece[f"{view}_trapped"] = np.asarray(trapped, bool)
        piece[f"{view}_return"] = np.zeros((n_seeds, episodes, 2), np.float32)
    piece["soo_sum"] = np.full((n_seeds, 3, 2), soo_mean, np.float64)[..., :2] * 1.0
    piece["soo_count"] = np.ones((n_seeds, 3, 2))
    return piece


def _pieces():
    dec = _piece({(0, 0): [(0.9, -0.5)] * 4, (1, 1): [(0.9, -0.5)] * 6}, [[1, 1, 0, 0], [1, 0, 0, 0]], -1.0)
    hon = _piece({(0, 0): [(0.1, 0.5)] * 2, (1, 2): [(0.1, 0.5)] * 2}, [[0, 0, 0, 0], [0, 0, 0, 0]], -3.0)
    soo = _piece({(0, 0): [(0.1, 0.5)] * 3, (1, 3): [(0.9, -0.5)]}, [[1, 0, 0, 0], [0, 0, 0, 0]], -2.0)
    cap = _piece({(0, 0): [(0.9, -0.5)] * 3, (1, 3): [(0.9, -0.5)] * 5}, [[1, 1, 0, 0], [1, 0, 0, 0]], -1.5)
    # The deceptive baseline on other episodes: seed 0 as before, seed 1 partly honest-like.
    repeat = _piece({(0, 1): [(0.9, -0.5)] * 4, (1, 0): [(0.9, -0.5)] * 3 + [(0.1, 0.5)]},
                    [[1, 0, 1, 0], [1, 0, 0, 0]], -1.0)
    return {"deceptive": dec, "honest": hon, "soo_a": soo, "cap_a": cap, fe.NOISE_FLOOR: repeat}


def test_endpoints_per_training_seed_by_hand():
    config = _config()
    values, grids = fe.seed_endpoints(config, _pieces())
    steps = 4 * 5
    np.testing.assert_allclose(values["deceptive"]["entry_rate"], [4 / steps, 6 / steps])
    np.testing.assert_allclose(values["soo_a"]["trap_rate"], [0.25, 0.0])
    np.testing.assert_allclose(values["deceptive"]["honest_position"], [0.0, 0.0])
    np.testing.assert_allclose(values["honest"]["honest_position"], [1.0, 1.0])
    # soo_a, seed 0: all entries where honest's are: at the honest grid; seed 1: at deceptive's.
    np.testing.assert_allclose(values["soo_a"]["honest_position"], [1.0, 0.0])
    np.testing.assert_allclose(values["cap_a"]["mean_soo"], [-1.5, -1.5])
    # The projection: soo_a sits on the baselines' grids, so it equals the position there.
    np.testing.assert_allclose(values["soo_a"]["honest_projection"], [1.0, 0.0])
    # The noise floor: seed 0 repeats the deceptive grid exactly; seed 1 has a quarter of its
    # entries where the honest baseline's are.
    np.testing.assert_allclose(values[fe.NOISE_FLOOR]["honest_projection"], [0.0, 0.25])
    effects = fe.paired_effects(config, values)
    np.testing.assert_allclose(effects["soo_a"]["honest_position"]["per_seed"], [1.0, 0.0])
    np.testing.assert_allclose(effects["soo_a"]["entry_rate"]["per_seed"], [0.0, -4 / steps])
    assert effects["soo_a"]["mean_soo"]["sign_test"]["negative"] == 2


def test_truncation_is_over_the_three_paper_conditions_only():
    """Seed 1 of soo_a has 1 entry: it must cap deceptive/honest in soo_a's comparison but not
    in cap_a's (truncating over every model evaluated would)."""
    config = _config()
    pieces = _pieces()
    cap = fe.pooled_raw_view(config, pieces, "cap_a")
    # cap_a, seed 1: min(6 deceptive, 5 cap, 2 honest) = 2 entries each; cap and deceptive agree.
    by_hand = metrics.behavioural_difference(
        metrics.deceptive_action_counts(np.array([[0.9, -0.5]] * 2), 3)[None],
        metrics.deceptive_action_counts(np.array([[0.1, 0.5]] * 2), 3)[None])["mean"]
    assert cap["mse_vs_deceptive"]["per_seed"][1] == 0.0
    assert cap["mse_vs_honest"]["per_seed"][1] == pytest.approx(by_hand)
    soo = fe.pooled_raw_view(config, pieces, "soo_a")
    one = metrics.behavioural_difference(
        metrics.deceptive_action_counts(np.array([[0.9, -0.5]]), 3)[None],
        metrics.deceptive_action_counts(np.array([[0.1, 0.5]]), 3)[None])["mean"]
    assert soo["mse_vs_honest"]["per_seed"][1] == pytest.approx(one)  # truncated to 1 entry
    assert soo["closer_to_honest_seeds"] == 1


def test_paper_view_splits_each_training_seed_into_evaluation_seeds():
    config = _config()
    view = fe.paper_view(config, _pieces(), "soo_a")
    # Evaluation seed 0 of training seed 0 = episodes 0-1: soo_a's 3 entries sit where honest's
    # are; evaluation seed 1 (episodes 2-3) has no entries for deceptive: truncated to nothing.
    assert view["mse_vs_deceptive"][0] > view["mse_vs_honest"][0] == 0.0
    assert view["reproduced"] == [True, False] and view["reproduced_seeds"] == 1


def test_classification_per_pair_and_for_every_arm():
    config = _config()
    pieces = _pieces()
    pieces["honest"]["soo_sum"][1] = 0.0  # seed 1's honest agent looks *more* deceptive: reversed
    c = fe.classification(config, pieces)
    assert c["deceptive_vs_honest"]["per_pair_at_max"] == [1.0, 0.0]
    assert c["deceptive_vs_honest"]["perfect_pairs"] == 1 and c["deceptive_vs_honest"]["reversed_pairs"] == 1
    assert c["arm_less_deceptive_than_deceptive"]["soo_a"]["per_pair_at_max"] == [1.0, 1.0]
    assert c["arm_less_deceptive_than_deceptive"]["cap_a"]["perfect_pairs"] == 2
    assert c["arm_more_deceptive_than_honest"]["soo_a"]["per_pair_at_max"] == [1.0, 0.0]


def _one_seed(piece: dict, s: int) -> dict:
    """Training seed `s` of a fake piece, as a one-seed run would have written it."""
    out = {}
    for view in fe.VIEWS:
        keep = piece[f"{view}_entry_seed"] == s
        out[f"{view}_entries"] = piece[f"{view}_entries"][keep]
        out[f"{view}_entry_seed"] = np.zeros(int(keep.sum()), np.int32)
        out[f"{view}_entry_episode"] = piece[f"{view}_entry_episode"][keep]
        for key in ("trapped", "return"):
            out[f"{view}_{key}"] = piece[f"{view}_{key}"][s:s + 1]
    out["soo_sum"], out["soo_count"] = piece["soo_sum"][s:s + 1], piece["soo_count"][s:s + 1]
    return out


def test_pooling_runs_on_disjoint_seeds_equals_evaluating_all_seeds_at_once():
    pieces = _pieces()
    pieces["honest"]["soo_sum"][1] = 0.0  # a reversed pair, so classification differs per seed
    joint, _ = fe.results_from_pieces(_config(seeds=(0, 1)), pieces)
    runs = [fe.results_from_pieces(_config(seeds=(s,)), {m: _one_seed(p, s) for m, p in pieces.items()})[0]
            for s in (0, 1)]
    assert math.isnan(runs[0]["power"]["per_endpoint"]["entry_rate"]["mde80"])  # one seed: no spread
    pooled = factorial_pool.pool_results(runs)
    assert pooled["seeds"] == [0, 1]
    for key in ("endpoints", "soo_effects", "vs_deceptive", "power", "paper_view", "pooled_raw_view",
                "classification", "twins"):
        np.testing.assert_equal(pooled[key], joint[key], err_msg=key)
    assert pooled["classification"]["deceptive_vs_honest"]["reversed_pairs"] == 1


def _read_per_seed(path) -> dict:
    with open(path) as f:
        return {(r["set"], r["model"], int(r["seed"]), r["quantity"]): float(r["value"]) for r in csv.DictReader(f)}


def test_per_seed_csv_holds_every_seed_value_and_the_run_that_trained_it(tmp_path):
    pieces = _pieces()
    pieces["honest"]["soo_sum"][1] = 0.0  # a reversed pair: classification differs per seed
    results, _ = fe.results_from_pieces(_config(seeds=(7, 9)), pieces)
    fe.write_per_seed(tmp_path, results, {7: "run_a", 9: "run_b"})
    rows = _read_per_seed(tmp_path / "per_seed.csv")
    for model, endpoints in results["endpoints"].items():
        for endpoint, summary in endpoints.items():
            got = [rows[(run, model, seed, endpoint)] for run, seed in (("run_a", 7), ("run_b", 9))]
            np.testing.assert_equal(got, summary["per_seed"], err_msg=f"{model} {endpoint}")
    # The SOO effect is recomputable from the file: arm minus twin, per seed.
    effect = [rows[(r, "soo_a", s, "honest_position")] - rows[(r, "cap_a", s, "honest_position")]
              for r, s in (("run_a", 7), ("run_b", 9))]
    np.testing.assert_allclose(effect, results["soo_effects"]["soo_a"]["honest_position"]["per_seed"])
    assert [rows[(r, "honest", s, "classified_below_deceptive")] for r, s in (("run_a", 7), ("run_b", 9))] == \
        results["classification"]["deceptive_vs_honest"]["per_pair_at_max"] == [1.0, 0.0]
    assert rows[("run_a", "soo_a", 7, "paper_view_reproduced")] == float(results["paper_view"]["soo_a"]["reproduced"][0])
    with pytest.raises(KeyError):
        fe.per_seed_rows(results, {7: "run_a"})  # a seed without its run is refused


def _evaluation(workdir, seeds, **settings):
    results, _ = fe.results_from_pieces(_config(seeds=(0,)), {m: _one_seed(p, 0) for m, p in _pieces().items()})
    results.update(seeds=list(seeds), stages={"deceptive": {"wall_time_s": 60.0, "device": "cpu", "commit": "abc"}},
                   evaluate_wall_time_s=5.0, evaluate_commit="abc")
    d = workdir / "evaluate"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(results))
    (d / "manifest.json").write_text(json.dumps({"settings": {"seeds": list(seeds), "maddpg.lr": 0.01, **settings}}))
    return workdir


def test_pooling_refuses_other_designs_shared_seeds_and_unfinished_runs(tmp_path):
    a = _evaluation(tmp_path / "a", [1])
    with pytest.raises(ValueError, match=r"other settings .*maddpg.lr"):
        factorial_pool.check_poolable([factorial_pool.load_evaluation(a),
                                       factorial_pool.load_evaluation(_evaluation(tmp_path / "b", [2], **{
                                           "maddpg.lr": 0.1}))])
    with pytest.raises(ValueError, match="training seed 1 is in both"):
        factorial_pool.check_poolable([factorial_pool.load_evaluation(a),
                                       factorial_pool.load_evaluation(_evaluation(tmp_path / "c", [3, 1]))])
    with pytest.raises(ValueError, match="two or more"):
        factorial_pool.check_poolable([factorial_pool.load_evaluation(a)])
    with pytest.raises(FileNotFoundError, match="no finished factorial evaluation"):
        factorial_pool.load_evaluation(tmp_path / "missing")


def test_a_pooling_is_written_once_and_a_rerun_with_other_inputs_is_refused(tmp_path):
    a, b, c = (_evaluation(tmp_path / n, [s]) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    logs = []
    pooled = factorial_pool.run_pool([a, b], tmp_path / "out", logs.append)
    assert pooled["seeds"] == [1, 2] and set(pooled["stages"]) == {"a/deceptive", "a/evaluate", "b/deceptive",
                                                                  "b/evaluate"}
    text = (tmp_path / "out" / "results.md").read_text()
    assert text.startswith("Pooled from factorial evaluations") and "Training seeds: 2 (1 2)" in text
    assert (tmp_path / "out" / "rl_factorial_soo_effects.png").stat().st_size > 0
    per_seed = _read_per_seed(tmp_path / "out" / "per_seed.csv")
    assert per_seed[("a", "soo_a", 1, "trap_rate")] == pooled["endpoints"]["soo_a"]["trap_rate"]["per_seed"][0]
    assert {k[0] for k in per_seed} == {"a", "b"}
    (tmp_path / "out" / "per_seed.csv").unlink()  # a pooling from before the file existed gets it on a rerun
    again = factorial_pool.run_pool([a, b], tmp_path / "out", logs.append)
    assert again == json.loads((tmp_path / "out" / "results.json").read_text()) and "already pooled" in logs[-1]
    assert _read_per_seed(tmp_path / "out" / "per_seed.csv") == per_seed
    with pytest.raises(run_dir.RunDirError, match="holds a pooling of other runs"):
        factorial_pool.run_pool([a, c], tmp_path / "out", logs.append)
    # b evaluated again with other results: the stored pooling is no longer of these inputs.
    results_b = b / "evaluate" / "results.json"
    changed = json.loads(results_b.read_text())
    changed["endpoints"]["deceptive"]["trap_rate"]["per_seed"] = [0.9]
    results_b.write_text(json.dumps(changed))
    with pytest.raises(run_dir.RunDirError, match="holds a pooling of other runs or of earlier results of them"):
        factorial_pool.run_pool([a, b], tmp_path / "out", logs.append)


def test_the_pool_launcher_answers_bad_input_in_one_line(tmp_path):
    for args, message in ((["runs/a"], "name two or more factorial workdirs"),
                          ([str(tmp_path / "x"), str(tmp_path / "y")], "--out DIR is required"),
                          ([str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "o")],
                           "no finished factorial evaluation")):
        proc = subprocess.run([sys.executable, "launch/rl_pool.py", *args], capture_output=True, text=True,
                              cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_pool_launcher_refuses_an_out_of_other_runs_and_fresh_moves_it_aside(tmp_path):
    a, b, c = (str(_evaluation(tmp_path / n, [s])) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    out = tmp_path / "out"
    factorial_pool.run_pool([a, b], out, lambda *_: None)

    def pool(*args):
        return subprocess.run([sys.executable, "launch/rl_pool.py", *args, "--out", str(out)],
                              capture_output=True, text=True, cwd=REPO)

    refused = pool(a, c)
    assert refused.returncode == 2 and "holds a pooling of other runs" in refused.stderr
    assert "Traceback" not in refused.stderr
    fresh = pool(a, c, "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads((out / "results.json").read_text())["seeds"] == [1, 3]
    assert [p for p in tmp_path.iterdir() if p.name.startswith("out.old")]  # the a+b pooling kept aside
