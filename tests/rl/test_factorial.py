"""The factorial (configs/rl_factorial.py): arms and twins, manifests, reuse of
configs/rl_deception.py's baselines without touching them, common random numbers between twins,
and a small factorial end to end, resumed."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import rl_deception, rl_factorial, rl_tiny
from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl import factorial, stages, training
from soo_jax.rl.env import BLUE
from soo_jax.rl.maddpg.train import make_train_chunk, unalias
from soo_jax.rl.soo import SOOActorStep

QUIET = lambda *a, **k: None  # noqa: E731


def tiny_factorial(workdir, baseline_workdir, arms=None):
    config = rl_factorial.get_config("tiny")
    config.workdir = str(workdir)
    config.baseline_workdir = str(baseline_workdir)
    config.checkpoint_every_chunks = 1
    if arms is not None:
        config.arms = {name: config.arms[name] for name in arms}
    return config


def tiny_deception(workdir):
    config = rl_tiny.get_config()
    config.workdir = str(workdir)
    config.checkpoint_every_chunks = 1
    return config


@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """configs/rl_tiny.py's deceptive baseline, as configs/rl_deception.py would leave it."""
    base = tmp_path_factory.mktemp("rl_deception")
    training.run_training_stage(tiny_deception(base), "deceptive", log=QUIET)
    return base


def snapshot(directory):
    return sorted((str(p.relative_to(directory)), p.stat().st_mtime_ns, p.stat().st_size)
                  for p in directory.rglob("*"))


def test_the_factorial_arms_and_their_twins():
    config = rl_factorial.get_config()
    config_lib.validate(config)
    arms = config.arms
    soo = [a for a in arms if arms[a].loss == "soo"]
    assert len(soo) == 8 and len({arms[a].twin for a in soo}) == 4
    assert {(arms[a].soo_target, arms[a].log_mse, arms[a].init) for a in soo} == {
        (t, m, i) for t in ("hidden", "action") for m in (False, True) for i in ("baseline", "scratch")}
    for a in soo:
        twin = arms[arms[a].twin]
        assert twin.loss == "capability"
        assert (twin.init, twin.log_mse, twin.reward, twin.stream) == (
            arms[a].init, arms[a].log_mse, arms[a].reward, arms[a].stream)
    assert (arms.honest_finetune.loss, arms.honest_finetune.reward, arms.honest_finetune.init) == (
        "none", "honest", "baseline")
    assert (arms.scratch_deceptive.loss, arms.scratch_deceptive.reward, arms.scratch_deceptive.init) == (
        "none", "deceptive", "scratch")
    order = config_lib.arm_order(config)
    assert sorted(order) == sorted(arms) and order.index("cap_mse_scratch") < order.index("soo_action_mse_scratch")
    assert config.finetune.n_episodes == 10_000 and tuple(config.seeds) == config_lib.PAPER_SEEDS


@pytest.mark.parametrize("key,value,message", [
    ("soo_action_mse_baseline.twin", "cap_mse_scratch", "init='scratch'"),
    ("soo_action_mse_baseline.twin", "honest_finetune", "must be capability-only"),
    ("soo_action_mse_baseline.twin", "nope", "must name an arm"),
    ("cap_mse_baseline.stream", 4, "stream=4"),
    ("soo_action_mse_baseline.soo_target", "logits", "soo_target"),
    ("honest_finetune.init", "warm", "init"),
    ("honest_finetune.loss", "kl", "loss"),
])
def test_bad_arms_are_refused_naming_the_key(key, value, message):
    config = rl_factorial.get_config()
    name, field = key.split(".")
    config.arms[name][field] = value
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.validate(config)


def test_stage_names_are_the_factorials():
    config = rl_factorial.get_config()
    config.stage = "soo"  # configs/rl_deception.py's stage, not an arm
    with pytest.raises(config_lib.ConfigError, match="config.stage"):
        config_lib.validate(config)
    config.stage = "soo_hidden_logmse_scratch"
    config_lib.validate(config)


def test_baselines_need_what_rl_deceptions_baselines_were_made_with_and_no_finetune_key():
    ours, theirs = rl_factorial.get_config(), rl_deception.get_config()
    for stage in config_lib.BASELINE_STAGES:
        settings = stages.stage_settings(ours, stage)
        assert settings == stages.stage_settings(theirs, stage)
        assert not any(k.startswith(("finetune", "arm", "evaluate")) for k in settings)
        assert str(stages.stage_dir(ours, stage)) == f"runs/rl_deception/{stage}"
    assert str(stages.stage_dir(ours, "soo_action_mse_scratch")) == "runs/rl_factorial/soo_action_mse_scratch"


def test_every_arm_records_its_own_settings_and_a_changed_one_is_refused(tmp_path):
    config = tiny_factorial(tmp_path / "f", tmp_path / "b")
    settings = {a: stages.stage_settings(config, a) for a in config.arms}
    for a, s in settings.items():
        arm = config.arms[a]
        assert (s["finetune.soo_target"], s["finetune.log_mse"], s["finetune.init"], s["finetune.reward"],
                s["arm.loss"], s["arm.stream"]) == (arm.soo_target, arm.log_mse, arm.init, arm.reward,
                                                   arm.loss, arm.stream)
    # No two arms can be mistaken for each other (the twin differs from its SOO arms by loss).
    assert len({json.dumps(s, sort_keys=True) for s in settings.values()}) == len(settings)
    stages.claim_stage(config, "soo_action_logmse_scratch")
    config.arms.soo_action_logmse_scratch.init = "baseline"
    config.arms.cap_logmse_scratch.init = "baseline"
    with pytest.raises(run_dir.RunDirError, match=r'finetune\.init: "scratch" -> "baseline"'):
        stages.claim_stage(config, "soo_action_logmse_scratch")


def test_finished_baselines_are_reused_without_writing_there(baselines, tmp_path):
    before = snapshot(baselines)
    logs = []
    config = tiny_factorial(tmp_path / "f", baselines)
    factorial.ensure_baseline(config, "deceptive", logs.append)
    assert any("reusing the finished baseline" in line for line in logs), logs
    state = training.initial_state(config, "soo_hidden_mse_baseline")()  # loads it
    jax.tree.map(np.testing.assert_array_equal, state.agents,
                 stages.load_agents(tiny_deception(baselines), "deceptive"))
    assert snapshot(baselines) == before
    changed = tiny_factorial(tmp_path / "f2", baselines)
    changed.maddpg.lr = 1e-3
    with pytest.raises(run_dir.RunDirError, match=r"maddpg\.lr: 0\.003 -> 0\.001"):
        factorial.ensure_baseline(changed, "deceptive", QUIET)
    with pytest.raises(run_dir.RunDirError, match=r"maddpg\.lr"):  # nor does an arm start from it
        training.initial_state(changed, "cap_mse_baseline")
    assert snapshot(baselines) == before


def test_a_baseline_without_a_manifest_is_refused_and_left_alone(baselines, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(baselines / "deceptive", other / "deceptive")
    (other / "deceptive" / "manifest.json").unlink()
    (other / "honest" / "progress").mkdir(parents=True)
    (other / "honest" / "history.json").write_text("[]")
    before = snapshot(other)
    config = tiny_factorial(tmp_path / "f", other)
    for stage in ("deceptive", "honest"):  # finished, and unfinished
        with pytest.raises(run_dir.RunDirError, match="no manifest.json: it was not made by this version"):
            factorial.ensure_baseline(config, stage, QUIET)
    assert snapshot(other) == before


def _one_chunk(config, stage):
    init = training.initial_state(config, stage)
    state = jax.device_put(unalias(jax.jit(init)()), jax.devices()[0])
    r = stages.recipe(config, stage)
    hyper = config_lib.maddpg_hyper(config)
    chunk = make_train_chunk(hyper, config.chunk_episodes, SOOActorStep(hyper, r.soo) if r.soo else None)
    before = jax.tree.map(np.asarray, state)
    after, outputs = chunk(state, jnp.int32(0), config_lib.env_params(config, r.reward))
    return before, jax.tree.map(np.asarray, after), jax.tree.map(np.asarray, outputs)


@pytest.mark.parametrize("init", ["scratch", "baseline"])
def test_twins_share_init_resets_noise_and_minibatches(baselines, tmp_path, init):
    config = tiny_factorial(tmp_path, baselines)
    soo_before, soo_after, soo_out = _one_chunk(config, f"soo_hidden_mse_{init}")
    cap_before, cap_after, cap_out = _one_chunk(config, f"cap_mse_{init}")
    jax.tree.map(np.testing.assert_array_equal, soo_before, cap_before)  # same networks, same key
    pretrained = jax.tree.map(np.asarray, stages.load_agents(config, "deceptive"))
    fresh_differs = not np.array_equal(soo_before.agents[BLUE].policy.params["fc1"]["kernel"],
                                       pretrained[BLUE].policy.params["fc1"]["kernel"])
    assert fresh_differs == (init == "scratch")
    jax.tree.map(np.testing.assert_array_equal, soo_before.reference, pretrained[BLUE].policy)
    # The same minibatch slots at every update, the same exploration noise state, the same resets.
    np.testing.assert_array_equal(soo_out["sampled_first_index"], cap_out["sampled_first_index"])
    assert np.unique(soo_out["sampled_first_index"]).size > 1  # not a constant
    np.testing.assert_array_equal(soo_after.rollout.ou, cap_after.rollout.ou)
    np.testing.assert_array_equal(soo_after.rollout.env_state.landmark_pos, cap_after.rollout.env_state.landmark_pos)
    np.testing.assert_array_equal(soo_after.key, cap_after.key)
    assert soo_out["update"]["soo_step"].any()  # the SOO term acted, so the blue policies differ:
    assert not np.array_equal(soo_after.agents[BLUE].policy.params["fc1"]["kernel"],
                              cap_after.agents[BLUE].policy.params["fc1"]["kernel"])


def test_the_default_arm_is_rl_deceptions_soo_stage_bit_for_bit(baselines, tmp_path):
    config = tiny_factorial(tmp_path / "f", baselines)
    training.run_training_stage(config, "soo_hidden_mse_baseline", log=QUIET)
    deception = tiny_deception(tmp_path / "d")
    shutil.copytree(baselines / "deceptive", tmp_path / "d" / "deceptive")
    training.run_training_stage(deception, "soo", log=QUIET)
    jax.tree.map(np.testing.assert_array_equal, stages.load_agents(config, "soo_hidden_mse_baseline"),
                 stages.load_agents(deception, "soo"))


def test_a_small_factorial_runs_end_to_end_and_resumes(baselines, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(baselines / "deceptive", base / "deceptive")  # honest is missing: trained there
    config = tiny_factorial(tmp_path / "f", base, arms=["cap_mse_scratch", "soo_action_mse_scratch",
                                                         "honest_finetune"])
    logs = []
    factorial.run(config, logs.append)
    assert (base / "honest" / "done.json").exists() and (base / "honest" / "manifest.json").exists()
    assert not (tmp_path / "f" / "honest").exists() and not (tmp_path / "f" / "deceptive").exists()
    results = json.loads((tmp_path / "f" / "evaluate" / "results.json").read_text())
    assert set(results["endpoints"]) == {"deceptive", "honest", "cap_mse_scratch", "soo_action_mse_scratch",
                                         "honest_finetune", "deceptive_repeat"}
    # The noise floor: the deceptive baseline on other episodes, scored on both grid endpoints.
    assert set(results["noise_floor"]) == {"honest_position", "honest_position_frozen", "honest_projection",
                                           "honest_projection_frozen"}
    assert results["endpoints"]["deceptive_repeat"]["entry_rate"] != results["endpoints"]["deceptive"]["entry_rate"]
    markdown = (tmp_path / "f" / "evaluate" / "results.md").read_text()
    assert "Noise floor" in markdown and "positive control" in markdown and "MDE, sign test" in markdown
    effect = results["soo_effects"]["soo_action_mse_scratch"]["entry_rate"]
    assert len(effect["per_seed"]) == len(config.seeds) and "p" in effect["sign_test"]
    assert results["twins"] == {"soo_action_mse_scratch": "cap_mse_scratch"}
    assert results["paper_view"]["honest_finetune"]["n_seeds"] == len(config.seeds)
    assert markdown.count("| soo_action_mse_scratch |") >= 2
    per_seed = (tmp_path / "f" / "evaluate" / "per_seed.csv").read_text().splitlines()
    first_value = results["endpoints"]["honest_finetune"]["trap_rate"]["per_seed"][0]
    assert f"f,,honest_finetune,{config.seeds[0]},trap_rate,{first_value!r}" in per_seed
    # The deceptive baseline's two views coincide (its own adversary is the frozen one).
    dec = results["endpoints"]["deceptive"]
    assert dec["entry_rate"]["per_seed"] == dec["entry_rate_frozen"]["per_seed"]
    # A rerun skips everything; a lost piece of the evaluation is the only thing redone.
    (tmp_path / "f" / "evaluate" / "results.json").unlink()
    (tmp_path / "f" / "evaluate" / "pieces" / "honest_finetune.npz").unlink()
    logs.clear()
    factorial.run(config, logs.append)
    assert sum("skipping" in line or "reusing" in line for line in logs) == 5, logs
    assert [line for line in logs if "rollouts done" in line] == [
        line for line in logs if line.startswith("[evaluate] honest_finetune: rollouts done")]
    again = json.loads((tmp_path / "f" / "evaluate" / "results.json").read_text())
    assert again["endpoints"] == results["endpoints"] and again["soo_effects"] == results["soo_effects"]


def test_the_replicate_is_the_same_design_on_other_seeds_in_other_workdirs():
    """configs/rl_factorial.py:replicate must pool with the paper-seed factorial: every stage's
    settings equal but the seeds, disjoint seeds, and no workdir shared (its baselines too)."""
    for variant, replicate in (("", "replicate"), ("tiny", "tiny_replicate")):
        main, other = rl_factorial.get_config(variant), rl_factorial.get_config(replicate)
        config_lib.validate(other)
        assert not set(main.seeds) & set(other.seeds) and len(other.seeds) == len(main.seeds)
        assert main.workdir != other.workdir and main.baseline_workdir != other.baseline_workdir
        for stage in ["deceptive", "honest", *main.arms, "evaluate"]:
            a, b = stages.stage_settings(main, stage), stages.stage_settings(other, stage)
            assert a.pop("seeds") != b.pop("seeds") and a == b, stage
    assert tuple(rl_factorial.get_config("replicate").seeds) == config_lib.REPLICATE_SEEDS
    with pytest.raises(ValueError, match="unknown variant"):
        rl_factorial.get_config("huge")
