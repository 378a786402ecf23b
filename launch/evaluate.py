"""Evaluate a model (and its SOO fine-tune) on the paper's deception, latent-SOO and
capability suites; write JSON, Markdown, PNG bar plots and the raw responses.

    python launch/evaluate.py --config configs/X.py [--adapter DIR | --checkpoint DIR]
        [--suite main,generalisation,latent,capability] [--scenarios FILE] [--out DIR]
        [--mtbench-questions FILE] [--config.eval.KEY=VALUE ...]

The config file's `get_config()` returns a ConfigDict with `model.path` (a Hugging Face model
directory, a .gguf file, or "embedded" for the packaged SmolLM2-135M-Instruct), `model.dtype`
and `eval` (`soo_jax.eval.config.default_eval_config()`). Command-line flags override the
config's values; `--config.a.b=v` overrides any field, and a key that does not exist is
rejected before anything is loaded.
"""
from __future__ import annotations

import datetime
import importlib.util
import os
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import ml_collections
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (get_config()).",
                                          lock_config=True)
flags.DEFINE_string("adapter", None, "PEFT adapter directory (export_peft_adapter format).")
flags.DEFINE_string("checkpoint", None, "Orbax training checkpoint directory (LoRA state).")
flags.DEFINE_string("suite", None, "Comma-separated suites; overrides config.eval.suites.")
flags.DEFINE_string("scenarios", None, "Authors' false_recommendation_scenarios.json; "
                    "overrides config.eval.scenarios_file.")
flags.DEFINE_string("out", None, "Output directory; overrides config.eval.out_dir.")
flags.DEFINE_string("mtbench-questions", None, "FastChat MT-Bench question file; overrides "
                    "config.eval.capability.mtbench_questions.")
FLAGS = flags.FLAGS



# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _flag_value(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path.py` or `path.py:arg` -> its get_config() (as config_flags loads it)."""
    path, _, arg = spec.partition(":") if not os.path.isfile(spec) else (spec, "", "")
    module_spec = importlib.util.spec_from_file_location("_eval_config", path)
    if module_spec is None or not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_overrides(config: ml_collections.ConfigDict, argv: list[str]) -> list[str]:
    """One message per `--config.KEY...` argument whose KEY path is not in `config`."""
    errors = []
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        node = config
        for depth, part in enumerate(key.split(".")):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                where = ".".join(["config", *key.split(".")[:depth]])
                errors.append(f"unknown config key {key!r} in {arg!r}: {where} has no field "
                              f"{part!r}" + (f" (fields: {', '.join(known)})" if known else ""))
                break
            node = node[part]
    return errors


def parse_flags(argv: list[str]) -> list[str]:
    spec = _flag_value(argv, "config")
    if spec is None:
        sys.exit("evaluate.py: --config FILE is required")
    try:
        errors = unknown_overrides(load_config_file(spec), argv)
    except FileNotFoundError as e:
        sys.exit(f"evaluate.py: {e}")
    if errors:
        sys.exit("evaluate.py: " + "\n".join(errors))
    try:
        return FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"evaluate.py: {e}")


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

def model_ids(model_path: str, adapter: str | None, checkpoint: str | None,
              configured: str = "") -> dict[str, str]:
    """MT-Bench model ids: {"base": name} plus {"tuned": name-adapter} when there is one."""
    base_name = configured or pathlib.Path(model_path.rstrip("/")).name.removesuffix(".gguf")
    ids = {"base": base_name}
    tuned_from = adapter or checkpoint
    if tuned_from:
        ids["tuned"] = f"{base_name}-{pathlib.Path(str(tuned_from).rstrip('/')).name}"
    return ids


def evaluate(config: ml_collections.ConfigDict, *, adapter: str | None = None,
             checkpoint: str | None = None, argv: list[str] | None = None) -> dict[str, str]:
    """Load, run `config.eval.suites`, write the report; returns {kind: path}."""
    import jax

    from soo_jax.eval.report import write_report
    from soo_jax.eval.runtime import git_commit, load_models, tqdm_progress, versions
    from soo_jax.eval.suite import run_suites
    from soo_jax.models.loader import resolve_model_path

    eval_config = config.eval
    started = time.time()
    if eval_config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", eval_config.compilation_cache_dir)
    model_path = str(resolve_model_path(config.model.path))
    base, tuned, tokenizer = load_models(model_path, config.model.dtype, adapter=adapter,
                                         checkpoint=checkpoint)
    ids = model_ids(model_path, adapter, checkpoint, eval_config.capability.mtbench_model_id)
    results, records = run_suites(eval_config, tokenizer, base_model=base, tuned_model=tuned,
                                  progress=tqdm_progress(eval_config.progress),
                                  out_dir=eval_config.out_dir, model_ids=ids)
    results = {"meta": {
        "model": model_path, "model_config_path": config.model.path,
        "dtype": config.model.dtype, "adapter": adapter, "checkpoint": checkpoint,
        "seeds": {"seed": eval_config.seed, "scenario_seed": eval_config.scenario_seed,
                  "generalisation_seed": eval_config.generalisation_seed},
        "versions": versions(), "git_commit": git_commit(),
        "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
        "argv": argv or sys.argv,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": time.time() - started,
        "config": config.to_dict(),
    }, **results}
    return write_report(results, records, eval_config.out_dir)


def apply_flags(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The command-line flags folded into a copy of the config."""
    config = ml_collections.ConfigDict(config.to_dict())
    overrides = {"suites": FLAGS.suite, "scenarios_file": FLAGS.scenarios,
                 "out_dir": FLAGS.out}
    for key, value in overrides.items():
        if value is not None:
            config.eval[key] = value
    if FLAGS["mtbench-questions"].value is not None:
        config.eval.capability.mtbench_questions = FLAGS["mtbench-questions"].value
    return config


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from soo_jax.eval.config import parse_suites

    config = apply_flags(_CONFIG.value)
    parse_suites(config.eval.suites)  # fail on a typo before loading the model
    paths = evaluate(config, adapter=FLAGS.adapter, checkpoint=FLAGS.checkpoint,
                     argv=sys.argv)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
