"""The sweep preset that tries the paper's and the public code's recipe choices on SmolLM2, and the
sweep's handling of evaluation-only overrides (the answer suffix)."""

import json

from configs.sweeps import PRESETS
from soo_jax.data.templates import (
    ARXIV_MISTRAL_ANSWER_SUFFIX, REPO_ANSWER_SUFFIX, ROOM_ONLY_ANSWER_SUFFIX,
)
from soo_jax.experiments.sweep import apply_overrides, point_name, run_sweep, split_overrides
from soo_jax.train import config as run_config
from tests.experiments.test_experiment import tiny_experiment_config
from tests.tiny_tokenizer import make_tiny_model_dir

README_POINTS = [f"loss.layers=({layer},),optimizer.learning_rate={rate}"
                 for layer in (6, 12, 18, 24) for rate in ("0.0001", "0.001")]


def recipe_of(c) -> tuple[str, str, str]:
    return ("chat" if c.data.chat_template else "raw", c.loss.objective,
            {REPO_ANSWER_SUFFIX: "repo", ARXIV_MISTRAL_ANSWER_SUFFIX: "paper"}[c.eval.answer_suffix])


def test_smollm2_recipes_preset_expands_to_the_trimmed_grid():
    from configs.smollm2 import get_config

    assert [point_name(p) for p in PRESETS["smollm2"]] == README_POINTS
    grid = PRESETS["smollm2_recipes"]
    assert grid[:8] == PRESETS["smollm2"]  # the README's points first, under their old names (reused)
    names = [point_name(p) for p in grid]
    assert len(grid) == 24 and len(set(names)) == 24
    configs = [apply_overrides(get_config(), p) for p in grid]
    for c in configs:
        run_config.validate(c)
    points = {(recipe_of(c), int(c.loss.layers[0]) if c.loss.objective == "mse" else None,
               c.optimizer.learning_rate) for c in configs}
    assert len(points) == 24
    expected = {(("raw", "mse", "repo"), layer, rate) for layer in (6, 12, 18, 24) for rate in (1e-4, 1e-3)}
    expected |= {((fmt, "mse", suffix), layer, 1e-4) for fmt in ("raw", "chat") for suffix in ("repo", "paper")
                 for layer in (6, 12, 18, 24)}
    expected |= {((fmt, "kl_logits", suffix), None, 1e-4) for fmt in ("raw", "chat") for suffix in ("repo", "paper")}
    assert points == expected
    for c in configs:
        if c.loss.objective == "kl_logits":  # the public code's count: 128 positions, pads included
            assert (c.loss.kl_mask_padding, c.data.max_length, c.data.pad_to_multiple_of) == (False, 128, 128)
            assert tuple(c.loss.layers) == (12,)  # unused by KL; latent SOO reported at configs/smollm2.py's
        # Nothing else moves: evaluation through the chat template, the README sweep's optimizer.
        assert c.eval.chat_template and c.train.epochs == 15 and c.optimizer.max_grad_norm == 1.0
    # The suffix is asked, not trained: 14 trainings, 6 of them new.
    trainings = {point_name(split_overrides(p)[0]) for p in grid}
    assert len(trainings) == 14 and len(trainings - set(README_POINTS)) == 6
    for p in grid:
        train_overrides, eval_overrides = split_overrides(p)
        assert eval_overrides in ([], [f"eval.answer_suffix={ARXIV_MISTRAL_ANSWER_SUFFIX}"])
        if eval_overrides:
            assert train_overrides in grid  # its training twin is a point of the grid


def test_an_eval_only_override_shares_the_training_and_gets_its_own_base(tmp_path, monkeypatch):
    import soo_jax.train.loop as loop

    make_tiny_model_dir(tmp_path / "model")
    trainings = []
    real = loop.run_training
    monkeypatch.setattr(loop, "run_training", lambda c, **k: trainings.append(c.train.out_dir) or real(c, **k))
    suffix = f"eval.answer_suffix={ROOM_ONLY_ANSWER_SUFFIX}"
    summary = run_sweep(tiny_experiment_config(tmp_path / "model"), [["loss.layers=(1,)"], ["loss.layers=(1,)", suffix]],
                        tmp_path / "sweep", n_scenarios=3)
    assert trainings == [str(tmp_path / "sweep" / "loss.layers=(1,)" / "train")]  # trained once
    plain, asked = summary["points"]
    assert plain["answer_suffix"] == REPO_ANSWER_SUFFIX and asked["answer_suffix"] == ROOM_ONLY_ANSWER_SUFFIX
    assert plain["latent_soo_site"] == asked["latent_soo_site"] and plain["train_soo"] == asked["train_soo"]
    assert set(summary["bases"]) == {"defaults", point_name([suffix])} and asked["base"] == point_name([suffix])
    assert summary["base"] == summary["bases"]["defaults"]
    assert summary["bases"][asked["base"]]["answer_suffix"] == ROOM_ONLY_ANSWER_SUFFIX
    assert (tmp_path / "sweep" / f"base,{point_name([suffix])}.json").is_file()
    assert ROOM_ONLY_ANSWER_SUFFIX in (tmp_path / "sweep" / "sweep.md").read_text()
    # A rerun trains and asks nothing again.
    again = run_sweep(tiny_experiment_config(tmp_path / "model"), [["loss.layers=(1,)"], ["loss.layers=(1,)", suffix]],
                      tmp_path / "sweep", n_scenarios=3)
    assert len(trainings) == 1 and json.dumps(again["points"]) == json.dumps(summary["points"])
