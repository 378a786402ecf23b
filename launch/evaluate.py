"""Evaluate a model (and its SOO fine-tune) on the paper's deception, latent-SOO and
capability suites; write JSON, Markdown, PNG bar plots and the raw responses.

    python launch/evaluate.py --config configs/X.py [--adapter DIR | --checkpoint DIR]
        [--suite forced_choice,main,generalisation,latent,capability] [--scenarios FILE] [--out DIR]
        [--mtbench_questions FILE] [--config.eval.KEY=VALUE ...]

The config file's `get_config()` returns a ConfigDict with `model.path` (a Hugging Face model
directory, a .gguf file, "embedded" for the packaged SmolLM2-135M-Instruct, or an opt-in model's
name: docs/opt_in_models.md), `model.dtype` and `eval` (`soo_jax.eval.config.default_eval_config()`).
Command-line flags override the config's values; `--config.a.b=v` overrides any field, and a key
that does not exist is rejected before anything is loaded.
"""
from __future__ import annotations

import sys

from soo_jax import cli

if __name__ == "__main__":
    cli.starting("evaluation")

import ml_collections  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
flags.DEFINE_string("adapter", None, "PEFT adapter directory (export_peft_adapter format).")
flags.DEFINE_string("checkpoint", None, "Orbax training checkpoint directory (LoRA state).")
flags.DEFINE_string("suite", None, "Comma-separated suites; overrides config.eval.suites.")
flags.DEFINE_string("scenarios", None, "Authors' false_recommendation_scenarios.json; "
                    "overrides config.eval.scenarios_file.")
flags.DEFINE_string("out", None, "Output directory; overrides config.eval.out_dir.")
flags.DEFINE_string("mtbench_questions", None, "FastChat MT-Bench question file; overrides "
                    "config.eval.capability.mtbench_questions.")
FLAGS = flags.FLAGS


def apply_flags(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The command-line flags folded into a copy of the config."""
    config = ml_collections.ConfigDict(config.to_dict())
    overrides = {"suites": FLAGS.suite, "scenarios_file": FLAGS.scenarios,
                 "out_dir": FLAGS.out}
    for key, value in overrides.items():
        if value is not None:
            config.eval[key] = value
    if FLAGS.mtbench_questions is not None:
        config.eval.capability.mtbench_questions = FLAGS.mtbench_questions
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]}")
    from soo_jax.eval.config import parse_suites
    from soo_jax.eval.run import evaluate

    config = apply_flags(_CONFIG.value)
    parse_suites(config.eval.suites)  # fail on a typo before loading the model
    paths = evaluate(config, adapter=FLAGS.adapter, checkpoint=FLAGS.checkpoint,
                     argv=sys.argv, fresh=FLAGS.fresh)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    cli.run(main)
