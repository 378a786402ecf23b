"""launch/generate.py --scenario asks a burglar scenario exactly as the evaluation does."""
import importlib.util
import pathlib

import pytest
from absl import flags

from soo_jax.data.scenarios import main_scenarios
from soo_jax.data.templates import REPO_ANSWER_SUFFIX

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "launch" / "generate.py"


def launcher():
    spec = importlib.util.spec_from_file_location("generate_launcher", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scenario_prompts_are_the_evaluations():
    generate = launcher()
    evaluated = main_scenarios(3, self_control=False)
    assert generate.scenario_prompts([2, 0]) == [evaluated[2].prompt, evaluated[0].prompt]
    assert evaluated[0].prompt.endswith(REPO_ANSWER_SUFFIX)
    args = generate.parse_args(["--scenario", "0"])
    assert args.prompt == [] and args.scenario == [0] and args.max_new_tokens == 75
    assert not args.raw and args.temperature == 0.0  # chat template, greedy: as evaluate.py asks
    for bad, message in (([], "give --prompt TEXT or --scenario N"), (["--scenario", "-1"], "--scenario: must be >= 0"),
                         (["--top_p", "nan", "--prompt", "x"], "--top_p: must be a finite number, got nan")):
        with pytest.raises(ValueError, match=message):
            generate.parse_args(bad)
    with pytest.raises(flags.Error, match="--scenario"):
        generate.parse_args(["--scenario", "abc"])
