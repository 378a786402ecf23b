"""One evaluation run into a directory: check the inputs, claim the directory, load the model
(and its adapter or checkpoint), run the configured suites, write the report.

`launch/evaluate.py` is the command line over `evaluate`; the experiments call the suites
directly (`soo_jax.eval.suite`).
"""
from __future__ import annotations

import datetime
import pathlib
import sys
import time

import ml_collections

from soo_jax.run_dir import say

__all__ = ["evaluate", "check_inputs", "evaluation_settings", "model_ids", "scenario_source", "FRESH_HINT"]


def model_ids(model_path: str, adapter: str | None, checkpoint: str | None,
              configured: str = "") -> dict[str, str]:
    """MT-Bench model ids: {"base": name} plus {"tuned": name-adapter} when there is one."""
    base_name = configured or pathlib.Path(model_path.rstrip("/")).name.removesuffix(".gguf")
    ids = {"base": base_name}
    tuned_from = adapter or checkpoint
    if tuned_from:
        ids["tuned"] = f"{base_name}-{pathlib.Path(str(tuned_from).rstrip('/')).name}"
    return ids


def scenario_source(eval_config: ml_collections.ConfigDict) -> str:
    """Where the selected deception suites' scenarios come from, for the start line."""
    from soo_jax.eval.config import parse_suites

    suites = parse_suites(eval_config.suites)
    parts = []
    if "main" in suites:
        parts.append(f"burglar scenarios from {eval_config.scenarios_file}" if eval_config.scenarios_file
                     else f"burglar scenarios from our generator (seed {eval_config.scenario_seed}; "
                     "--scenarios FILE for the authors' set)")
    if "generalisation" in suites:
        parts.append(f"generalisation combinations from {eval_config.combinations_file}"
                     if eval_config.combinations_file else
                     f"generalisation combinations from our generator (seed {eval_config.generalisation_seed})")
    return "; ".join(parts)


FRESH_HINT = "another --out, or --fresh to move the old results aside"
ANSWER_LOG = "answers.partial.jsonl"


def evaluation_settings(config: ml_collections.ConfigDict, model_path: str, adapter: str | None,
                        checkpoint: str | None) -> dict:
    """What the results in --out depend on: the evaluation settings, the model, the adapter
    (files by content, so a moved file is the same and a replaced one is not)."""
    from soo_jax import run_dir
    from soo_jax.eval.config import result_settings
    from soo_jax.peft_io import adapter_settings

    settings = {**result_settings(config.eval), "model.dtype": config.model.dtype}
    settings["model.identity"] = run_dir.model_identity(model_path)
    if adapter:
        settings.update(adapter_settings(adapter))
    if checkpoint:
        settings["checkpoint"] = str(pathlib.Path(checkpoint).absolute())
    return settings


DTYPES = ("float32", "bfloat16", "float16")


def check_inputs(config: ml_collections.ConfigDict, *, adapter: str | None, checkpoint: str | None) -> None:
    """Every setting and input file that needs no model, before anything is loaded or written."""
    from soo_jax.eval import config as eval_config_lib
    from soo_jax.peft_io import ADAPTER_WEIGHTS, read_peft_config

    if config.model.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype: {config.model.dtype!r} is not one of {DTYPES}")
    eval_config_lib.validate(config.eval)
    eval_config_lib.check_files(config.eval)
    if adapter and checkpoint:
        raise ValueError("give --adapter or --checkpoint, not both")
    if adapter:
        if not pathlib.Path(adapter).is_dir():
            raise FileNotFoundError(f"--adapter {adapter} not found: give a PEFT adapter directory "
                                    f"(a training run's OUT/adapter)")
        read_peft_config(adapter)  # names the file when it is not a usable LoRA config
        if not (pathlib.Path(adapter) / ADAPTER_WEIGHTS).is_file():
            raise FileNotFoundError(f"--adapter {adapter} has no {ADAPTER_WEIGHTS}: not a complete PEFT adapter")
    if checkpoint and not pathlib.Path(checkpoint).is_dir():
        raise FileNotFoundError(f"--checkpoint {checkpoint} not found: give a training run's OUT/checkpoints")


def check_model_shape(config: ml_collections.ConfigDict, model_path: str) -> None:
    """The layer settings against the model's config.json (read alone: no weights)."""
    from soo_jax.eval import config as eval_config_lib
    from soo_jax.models.loader import load_config

    eval_config_lib.validate_for_model(config.eval, load_config(model_path).num_layers)


def evaluate(config: ml_collections.ConfigDict, *, adapter: str | None = None,
             checkpoint: str | None = None, argv: list[str] | None = None, fresh: bool = False) -> dict[str, str]:
    """Load, run `config.eval.suites`, write the report; returns {kind: path}. Says what each
    stage does on stderr as it starts, and each suite's result as it finishes.

    The output directory is claimed first (`soo_jax.run_dir.claim`): finished results made
    with the same settings are reused, other settings are refused naming each key (`fresh`
    moves the old results aside, so a directory never mixes two runs' files). Answers are
    stored as each batch finishes, so an interrupted run resumes without re-answering."""
    from soo_jax import run_dir
    from soo_jax.models.loader import resolve_model_path

    check_inputs(config, adapter=adapter, checkpoint=checkpoint)
    model_path = str(resolve_model_path(config.model.path))  # a .gguf converts here, once
    check_model_shape(config, model_path)
    out_dir = pathlib.Path(config.eval.out_dir).absolute()
    with run_dir.claim(out_dir, evaluation_settings(config, model_path, adapter, checkpoint), kind="evaluate",
                       fresh=fresh, fresh_hint=FRESH_HINT):
        finished = out_dir / "results.json"
        if finished.is_file():
            say(f"evaluate.py: {out_dir} already holds these results (same settings); nothing to do")
            return {kind: str(out_dir / name) for kind, name in (
                ("json", "results.json"), ("markdown", "results.md"), ("plot", "deception_rates.png"),
                ("responses", "responses.jsonl"), ("forced_choice", "forced_choice.jsonl")) if (out_dir / name).is_file()}
        return _evaluate(config, model_path, adapter=adapter, checkpoint=checkpoint, argv=argv)


def _evaluate(config: ml_collections.ConfigDict, model_path: str, *, adapter: str | None, checkpoint: str | None,
              argv: list[str] | None) -> dict[str, str]:
    import jax

    from soo_jax.eval.answer_log import AnswerLog
    from soo_jax.eval.config import parse_suites
    from soo_jax.eval.report import write_report
    from soo_jax.eval.runtime import load_models, tqdm_progress, versions
    from soo_jax.eval.suite import run_suites
    from soo_jax.run_dir import git_commit

    eval_config = config.eval
    started = time.time()
    answer_log = AnswerLog(pathlib.Path(eval_config.out_dir) / ANSWER_LOG)
    if answer_log.answers:
        say(f"evaluate.py: resuming with {len(answer_log.answers)} answers stored by the interrupted run")
    tuned_from = f" with {'adapter' if adapter else 'checkpoint'} {adapter or checkpoint}" if (
        adapter or checkpoint) else ""
    say(f"evaluate.py: loading {model_path} ({config.model.dtype}){tuned_from}")
    base, tuned, tokenizer = load_models(model_path, config.model.dtype, adapter=adapter, checkpoint=checkpoint,
                                         compilation_cache_dir=eval_config.compilation_cache_dir)
    source = scenario_source(eval_config)
    say(f"evaluate.py: loaded in {time.time() - started:.0f} s; suites "
        f"{', '.join(parse_suites(eval_config.suites))}"
        + (f"; {eval_config.num_scenarios} scenarios per set, {source}" if source else ""))
    ids = model_ids(model_path, adapter, checkpoint, eval_config.capability.mtbench_model_id)
    results, records = run_suites(eval_config, tokenizer, base_model=base, tuned_model=tuned,
                                  progress=tqdm_progress(eval_config.progress),
                                  out_dir=eval_config.out_dir, model_ids=ids, log=say,
                                  answer_log=answer_log)
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
    paths = write_report(results, records, eval_config.out_dir)
    answer_log.remove()
    say(f"evaluate.py: done in {(time.time() - started) / 60:.1f} min"
        + (f" ({answer_log.reused} answers taken from the interrupted run)" if answer_log.reused else ""))
    return paths
