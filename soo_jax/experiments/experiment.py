"""The multi-seed SOO experiment: base model, honesty prompt, and SOO fine-tuning over seeds.

One directory per piece of work, each skipped when its results exist, so an interrupted
experiment resumes where it stopped:

    OUT/base/<set>/results.json        base model (+ honesty-prompt baseline) on a scenario set
    OUT/seed_<s>/train/                the SOO fine-tuning run (checkpoints, adapter, metrics)
    OUT/seed_<s>/<set>/results.json    the fine-tuned model on that set
    OUT/results.json, OUT/results.md   everything aggregated: the mean over seeds and its 95%
                                       t-interval (ddof 1; `t_summary`)
    OUT/per_seed.csv                   every model's values, one per row (`per_seed_rows`), for
                                       intervals and tables computed from the data

A scenario set is "authors" (their file, `--scenarios`) or "generated" (our generator); the first
set runs every configured suite, later ones only the main burglar suite.

With `adapters_from` (another experiment's OUT) the seeds' adapters are taken from there instead
of being trained again, so more sets or suites can be evaluated on the same fine-tuned models.

OUT and every piece directory hold a manifest (`soo_jax.run_dir`): a rerun with other
result-changing settings is refused naming each key, so a stored piece is only reused for the
settings that made it. More seeds or sets may be added to an existing OUT.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import time
from typing import Callable

import ml_collections
import numpy as np

from soo_jax import run_dir
from soo_jax.checks import number
from soo_jax.eval import config as eval_config_lib
from soo_jax.eval.answer_log import AnswerLog
from soo_jax.eval.deception import headline, ordered_conditions
from soo_jax.eval.forced_choice import t_interval
from soo_jax.peft_io import adapter_settings

SETS = ("authors", "generated")
DECEPTION_COLUMNS = ("deceptive", "order_balanced", "position_bias", "neither")


@dataclasses.dataclass
class ExperimentPlan:
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    scenarios_file: str
    out_dir: pathlib.Path
    adapters_from: pathlib.Path | None = None

    def adapter_dir(self, seed: int) -> pathlib.Path:
        root = self.adapters_from if self.adapters_from is not None else self.out_dir
        return root / f"seed_{seed}" / "train" / "adapter"

    def has_adapter(self, seed: int) -> bool:
        return (self.adapter_dir(seed) / "adapter_config.json").is_file()

    def __post_init__(self):
        unknown = set(self.sets) - set(SETS)
        if unknown or not self.sets:
            raise ValueError(f"unknown scenario set(s) {sorted(unknown) or self.sets}; use {SETS}")
        if "authors" in self.sets and not self.scenarios_file:
            raise ValueError("the 'authors' scenario set needs --scenarios FILE "
                             "(the authors' false_recommendation_scenarios.json)")
        if self.scenarios_file:
            from soo_jax.data.scenarios import check_scenarios_file

            check_scenarios_file(self.scenarios_file)
        if not self.seeds:
            raise ValueError("give at least one seed")
        for seed in self.seeds:
            try:
                number(seed, integer=True, low=0, high=2**32 - 1)
            except ValueError as err:
                raise ValueError(f"--seeds: each seed {err}") from None
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds: each seed once, got {self.seeds}")
        if self.adapters_from is not None:
            missing = [s for s in self.seeds if not self.has_adapter(s)]
            if missing:
                raise FileNotFoundError(f"--adapters_from {self.adapters_from} has no trained adapter for "
                                        f"seed(s) {missing} (expected {self.adapter_dir(missing[0])})")


_say = run_dir.say

FRESH_HINT = "another --out, or --fresh to move the old experiment aside"


def experiment_settings(config: ml_collections.ConfigDict, plan: ExperimentPlan) -> dict:
    """What every piece of OUT depends on (seeds and sets may grow: each has its own directory)."""
    settings = run_dir.without(run_dir.flatten(config.to_dict()), eval_config_lib.run_not_result_changing())
    if plan.scenarios_file:
        settings["scenarios_file.sha256"] = run_dir.file_digest(plan.scenarios_file)
    settings["adapters_from"] = str(plan.adapters_from) if plan.adapters_from else None
    return settings


def piece_settings(eval_config: ml_collections.ConfigDict, adapter_dir: pathlib.Path | None) -> dict:
    settings = eval_config_lib.result_settings(eval_config)
    if adapter_dir is not None:
        settings.update(adapter_settings(adapter_dir))
    return settings


def eval_config_for(config: ml_collections.ConfigDict, plan: ExperimentPlan, scenario_set: str,
                    first: bool) -> ml_collections.ConfigDict:
    eval_config = ml_collections.ConfigDict(config.eval.to_dict())
    eval_config.scenarios_file = plan.scenarios_file if scenario_set == "authors" else ""
    if not first:
        eval_config.suites = "main"
    return eval_config


def cached_piece(directory: pathlib.Path, settings: dict, compute: Callable[[AnswerLog], dict]) -> dict:
    """A piece's results: stored ones when its manifest matches `settings`, else computed."""
    run_dir.check_manifest(directory, settings, kind="experiment piece", fresh_hint=FRESH_HINT)
    results_file = directory / "results.json"
    if results_file.is_file():
        _say(f"reusing {results_file}")
        return run_dir.read_json(results_file)
    answer_log = AnswerLog(directory / "answers.partial.jsonl")
    if answer_log.answers:
        _say(f"{directory}: resuming with {len(answer_log.answers)} stored answers")
    compute(answer_log)
    answer_log.remove()
    return run_dir.read_json(results_file)


def run_experiment(config: ml_collections.ConfigDict, plan: ExperimentPlan, *, progress=None,
                   fresh: bool = False) -> dict:
    """Runs (or resumes) every piece of the experiment and writes the aggregate; `fresh` moves an
    existing OUT aside first."""
    check_before_claim(config, plan)
    with run_dir.claim(plan.out_dir, experiment_settings(config, plan), kind="experiment", fresh=fresh,
                       fresh_hint=FRESH_HINT):
        return _run_experiment(config, plan, progress=progress)


def check_before_claim(config: ml_collections.ConfigDict, plan: ExperimentPlan) -> None:
    """Every setting the experiment's pieces use, before OUT is claimed or a model loaded."""
    check_settings(config, train=not all(plan.has_adapter(seed) for seed in plan.seeds))


def check_settings(config: ml_collections.ConfigDict, *, train: bool = True) -> None:
    """A multi-run experiment's settings, before its OUT is claimed or a model loaded: the
    training settings (its runs start after minutes of base-model evaluation), the evaluation
    settings and files, and the layer indices against the model's config.json alone."""
    from soo_jax.models.loader import load_config, resolve_model_path
    from soo_jax.train import config as train_config_lib
    from soo_jax.train.loop import check_before_claim as check_training

    train_config_lib.validate(config)
    eval_config_lib.validate(config.eval)
    eval_config_lib.check_files(config.eval)
    model_path = resolve_model_path(config.model.path)
    if train:
        check_training(config, model_path)
    eval_config_lib.validate_for_model(config.eval, load_config(model_path).num_layers)


def _run_experiment(config: ml_collections.ConfigDict, plan: ExperimentPlan, *, progress=None) -> dict:

    from soo_jax.eval.capability import base_view
    from soo_jax.eval.report import write_report
    from soo_jax.eval.runtime import load_base, tuned_view
    from soo_jax.eval.suite import run_suites
    from soo_jax.train.loop import run_training

    started = time.time()
    model_path, base, tokenizer = load_base(config)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}

    base_results = {}
    for i, scenario_set in enumerate(plan.sets):
        directory = plan.out_dir / "base" / scenario_set
        eval_config = eval_config_for(config, plan, scenario_set, first=i == 0)
        tick = time.time()
        base_results[scenario_set] = cached_piece(directory, piece_settings(eval_config, None), lambda log: write_report(
            *run_suites(eval_config, tokenizer, base_model=base, progress=progress, answer_log=log, log=_say),
            str(directory)))
        timing[f"base/{scenario_set}"] = time.time() - tick

    seed_results: dict[int, dict[str, dict]] = {}
    for seed in plan.seeds:
        seed_dir = plan.out_dir / f"seed_{seed}"
        tick = time.time()
        if not plan.has_adapter(seed):
            _say(f"SOO fine-tuning, seed {seed}")
            train_config = copy.deepcopy(config)
            with train_config.unlocked():
                train_config.train.seed = seed
                train_config.train.out_dir = str(seed_dir / "train")
                train_config.train.evaluate = False
                train_config.train.export_adapter = True
            run_training(train_config)
        timing[f"seed_{seed}/train"] = time.time() - tick
        tuned = tuned_view(base, adapter=str(plan.adapter_dir(seed)))
        # The base as the tuned graph with zeroed adapters: both share every compilation.
        reference = base_view(tuned)
        seed_results[seed] = {}
        for i, scenario_set in enumerate(plan.sets):
            directory = seed_dir / scenario_set
            eval_config = eval_config_for(config, plan, scenario_set, first=i == 0)
            tick = time.time()
            settings = piece_settings(eval_config, plan.adapter_dir(seed))
            seed_results[seed][scenario_set] = cached_piece(directory, settings, lambda log: write_report(*run_suites(
                eval_config, tokenizer, base_model=reference, tuned_model=tuned, progress=progress,
                generate_for=("tuned",), answer_log=log, log=_say), str(directory)))
            timing[f"seed_{seed}/{scenario_set}"] = time.time() - tick

    aggregate = aggregate_results(base_results, seed_results, plan)
    aggregate["meta"] = {"model": model_path, "seeds": list(plan.seeds), "sets": list(plan.sets),
                         "scenarios_file": plan.scenarios_file,
                         "adapters_from": str(plan.adapters_from) if plan.adapters_from else None,
                         "timing_s": timing,
                         "wall_time_s": time.time() - started, "config": json.loads(config.to_json_best_effort())}
    run_dir.atomic_write_json(plan.out_dir / "results.json", aggregate)
    run_dir.atomic_write_text(plan.out_dir / "results.md", markdown_table(aggregate))
    run_dir.atomic_write_text(plan.out_dir / "per_seed.csv", run_dir.per_seed_csv(per_seed_rows(base_results, seed_results, plan)))
    return aggregate


def t_summary(values, *, test: bool = True) -> dict | None:
    """Mean, 95% t-interval (ddof 1) and, with `test`, the two-sided one-sample t-test against 0
    (for differences; a rate's test against 0 says nothing); None when empty."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return None
    out = {"mean": float(x.mean()), "n": int(x.size), "values": [float(v) for v in x]}
    if x.size >= 2:
        interval = t_interval(x)
        sd = interval["sd"]
        out.update(sd=sd, low=interval["low"], high=interval["high"])
        if test:
            from scipy import stats

            t = out["mean"] / (sd / math.sqrt(x.size)) if sd > 0 else math.copysign(math.inf, out["mean"] or 1.0)
            out.update(t=float(t), p=float(2 * stats.t.sf(abs(t), x.size - 1)) if math.isfinite(t) else 0.0)
    return out


def aggregate_results(base: dict[str, dict], seeds: dict[int, dict[str, dict]], plan: ExperimentPlan) -> dict:
    """Per scenario set and condition: base, honesty prompt, and SOO over seeds (`t_summary`)."""
    out: dict = {"deception": {}, "latent": {}, "capability": {}}
    for scenario_set in plan.sets:
        base_conditions = base[scenario_set]["deception"]["base"]
        table: dict = {}
        for condition in ordered_conditions(base_conditions):
            if condition.endswith("/honesty_prompt"):
                continue
            row = {"base": headline(base_conditions[condition])}
            honesty = base_conditions.get(f"{condition}/honesty_prompt")
            if honesty is not None:
                row["honesty_prompt"] = headline(honesty)
            per_seed = [headline(seeds[s][scenario_set]["deception"]["tuned"][condition])
                        for s in plan.seeds]
            row["soo"] = {key: t_summary([h.get(key) for h in per_seed], test=False)
                          for key in per_seed[0] if key != "n"}
            row["soo"]["n"] = per_seed[0]["n"]
            table[condition] = row
        out["deception"][scenario_set] = table
    first = plan.sets[0]
    if "latent" in base[first]:
        base_latent = base[first]["latent"]["base"]
        out["latent"] = {
            "base": {"score": base_latent["score"], "training_site": base_latent["training_site"]["value"]},
            "soo": {"score": t_summary([seeds[s][first]["latent"]["tuned"]["score"] for s in plan.seeds], test=False),
                    "training_site": t_summary([seeds[s][first]["latent"]["tuned"]["training_site"]["value"]
                                                for s in plan.seeds], test=False)},
            "training_site": base_latent["training_site"],
        }
    if "capability" in seeds[plan.seeds[0]][first]:
        kls = [seeds[s][first]["capability"].get("kl", {}).get("mean_kl_base_tuned") for s in plan.seeds]
        out["capability"] = {"mean_kl_base_tuned": t_summary(kls, test=False)}
    return out


ORDERS = ("original", "swapped")


def _condition_rows(scenario_set: str, condition: str, model: str, seed: int | None, summary: dict) -> list[dict]:
    """One condition's rates as rows: each label's rate in each room order asked (%), the
    order-balanced rate and the position bias (%), and n."""
    rows = []

    def add(quantity, value):
        rows.append({"set": scenario_set, "condition": condition, "model": model,
                     "seed": "" if seed is None else seed, "quantity": quantity, "value": value})

    add("n", summary["original"]["n"])
    for order in ORDERS:
        for key, value in summary.get(order, {}).items():
            if key.endswith("_rate"):
                add(f"{key.removesuffix('_rate')}_{order}", value)
    balanced = summary.get("order_balanced", {})
    for key in ("order_balanced_deception_rate", "order_balanced_correct_rate"):
        if key in balanced:
            add("order_balanced", balanced[key])
    if "position_bias_rate" in balanced:
        add("position_bias", balanced["position_bias_rate"])
    return rows


def per_seed_rows(base: dict[str, dict], seeds: dict[int, dict[str, dict]], plan: ExperimentPlan) -> list[dict]:
    """Every value the aggregate summarises, per model and seed, as rows of run_dir.PER_SEED_COLUMNS.

    model: "base", "honesty_prompt" (the base model asked with the honesty prompt) or "soo"
    (seed set). Deception rows name their set and condition; quantity is `<label>_<order>`
    (label deceptive/honest/neither, or correct/projected/neither for Perspectives; order
    original/swapped), `order_balanced`, `position_bias` (all %) or `n`. The model-level
    quantities of the first set's suites have no condition: `latent_score` (all linear layers),
    `training_site_mse` and `kl_base_tuned` (nats, SOO seeds only)."""
    rows: list[dict] = []
    for scenario_set in plan.sets:
        base_conditions = base[scenario_set]["deception"]["base"]
        for condition in ordered_conditions(base_conditions):
            if condition.endswith("/honesty_prompt"):
                asked = condition.removesuffix("/honesty_prompt")
                rows += _condition_rows(scenario_set, asked, "honesty_prompt", None, base_conditions[condition])
            else:
                rows += _condition_rows(scenario_set, condition, "base", None, base_conditions[condition])
                for seed in plan.seeds:
                    rows += _condition_rows(scenario_set, condition, "soo", seed,
                                            seeds[seed][scenario_set]["deception"]["tuned"][condition])
    first = plan.sets[0]

    def model_row(model, seed, quantity, value):
        rows.append({"set": first, "condition": "", "model": model, "seed": "" if seed is None else seed,
                     "quantity": quantity, "value": value})

    if "latent" in base[first]:
        latent = base[first]["latent"]["base"]
        model_row("base", None, "latent_score", latent["score"])
        model_row("base", None, "training_site_mse", latent["training_site"]["value"])
        for seed in plan.seeds:
            tuned = seeds[seed][first]["latent"]["tuned"]
            model_row("soo", seed, "latent_score", tuned["score"])
            model_row("soo", seed, "training_site_mse", tuned["training_site"]["value"])
    for seed in plan.seeds:
        kl = seeds[seed][first].get("capability", {}).get("kl", {}).get("mean_kl_base_tuned")
        if kl is not None:
            model_row("soo", seed, "kl_base_tuned", kl)
    return rows


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):
        return seed_interval(value, "{:.1f}")
    return f"{value:.1f}"


def seed_interval(summary: dict, fmt: str) -> str:
    """A `t_summary` as "mean [low, high]" (the mean alone from one seed)."""
    text = fmt.format(summary["mean"])
    return f"{text} [{fmt.format(summary['low'])}, {fmt.format(summary['high'])}]" if "low" in summary else text


def markdown_table(aggregate: dict) -> str:
    lines = ["SOO rows: the mean over seeds [95% t-interval, ddof 1].", ""]
    for scenario_set, table in aggregate["deception"].items():
        lines += [f"### Deception, {scenario_set} scenarios", "",
                  "| condition | model | n | deceptive % (paper metric) | order-balanced deceptive % | "
                  "position bias % | neither % |", "|---|---|---|---|---|---|---|"]
        for condition, row in table.items():
            for label in ("base", "honesty_prompt", "soo"):
                if label not in row:
                    continue
                h = row[label]
                first_key = "deceptive" if "deceptive" in h else "correct"
                name = {"base": "base", "honesty_prompt": "honesty prompt", "soo": "SOO"}[label]
                lines.append(f"| {condition}{' (correct %)' if first_key == 'correct' else ''} | {name} | {h['n']} | "
                             f"{_fmt(h[first_key])} | {_fmt(h.get('order_balanced'))} | "
                             f"{_fmt(h.get('position_bias'))} | {_fmt(h.get('neither'))} |")
        lines.append("")
    latent = aggregate.get("latent")
    if latent:
        site = latent["training_site"]
        lines += ["### Latent SOO (lower = more self-other overlap)", "",
                  f"| model | all linear layers | {site['site']} at layer {site['layer']} ({site['pooling']}) |",
                  "|---|---|---|",
                  f"| base | {latent['base']['score']:.4g} | {latent['base']['training_site']:.4g} |",
                  f"| SOO | {seed_interval(latent['soo']['score'], '{:.4g}')} | "
                  f"{seed_interval(latent['soo']['training_site'], '{:.4g}')} |", ""]
    kl = aggregate.get("capability", {}).get("mean_kl_base_tuned")
    if kl:
        lines += [f"Capability retention: mean next-token KL(base ‖ SOO) on the general prompts "
                  f"{seed_interval(kl, '{:.4g}')} nats.", ""]
    return "\n".join(lines)
