"""The controlled LLM experiment: SOO against matched controls, on the forced-choice endpoint.

Arms, each trained exactly like the SOO arm (same pairs, data order, steps, LoRA settings, seed):

    soo           the SOO fine-tuning of the run config
    lm            the same prompts with the ordinary next-token loss (`loss.objective=lm`)
    mismatched    the SOO loss between mismatched pairs (`data.pairing=mismatched`)
    perturbation  no training: a random LoRA update scaled to the SOO arm's KL(base || tuned)
                  on the general prompts, per seed (soo_jax.experiments.perturbation)

The SOO effect is the paired difference SOO - control per seed over the same test scenarios.
Layout of OUT (each piece skipped when its results exist, so a rerun resumes):

    OUT/screen/                  the base model's forced choice on the selection set
    OUT/base/primary/            the base model on the test set: forced choice, latent SOO
    OUT/base/secondary/          ... generated answers (paper metric, order-balanced)
    OUT/seed_<s>/<arm>/train/    a trained arm's run (checkpoints, adapter); perturbation:
                                 adapter/ and calibration.json
    OUT/seed_<s>/<arm>/primary/  forced choice, latent SOO, KL on the test set
    OUT/seed_<s>/<arm>/secondary/ generated answers on the test set
    OUT/per_seed.csv, OUT/screen.json, OUT/plan.json, OUT/results.json, OUT/results.md
                                 rewritten after every seed (interim) and at the end;
                                 `report_from_dir` recomputes results.md from the first three

Each seed is finished (every arm's primary, then its secondary stage) before the next starts, so
that a finished seed needs none of its adapters again. A record directory (`ControlledPlan.record`,
e.g. committed under docs/results/data/) carries finished seeds across machines that keep no files:
its screen.json is written after the screen, per_seed.csv and plan.json after every seed, and a seed complete
there is taken from it instead of being recomputed, once this machine reproduces the recorded base
model's values. The analysis (`analyse`) is fixed in code: 95% t-intervals over seeds (ddof 1) and
the two-sided paired t-test of SOO - LM control on the order-balanced forced-choice log-odds
(docs/results/llm_preregistration.md).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import pathlib
import time

import ml_collections
import numpy as np

from soo_jax import run_dir
from soo_jax.data.scenarios import load_reference_scenarios
from soo_jax.data.templates import with_answer_suffix
from soo_jax.experiments.experiment import cached_piece, piece_settings, t_summary

ARMS = ("soo", "lm", "mismatched", "perturbation")
TRAINED_ARMS = ("soo", "lm", "mismatched")
CONTROLS = ("lm", "mismatched", "perturbation")
PRIMARY_CONTROL = "lm"
# Per (seed, arm) values, by stage; "fc_*" are the forced-choice endpoint's.
PRIMARY_ENDPOINTS = ("fc_log_odds", "fc_deceptive_choice", "fc_position_effect", "latent_site", "latent_all", "kl")
SECONDARY_ENDPOINTS = ("deceptive", "honest", "neither", "order_balanced", "position_bias",
                       "deceptive_original", "honest_original", "neither_original",
                       "deceptive_swapped", "honest_swapped", "neither_swapped", "order_balanced_answered")
FRESH_HINT = "another --out, or --fresh to move the old experiment aside"
# A recorded base value and this machine's must agree this closely for recorded seeds to be used:
# the evaluation is deterministic on one CPU type, so any larger gap means another machine or code.
RECORD_RTOL = 1e-6

_say = run_dir.say


@dataclasses.dataclass(frozen=True)
class ControlledPlan:
    seeds: tuple[int, ...]
    scenarios_file: str
    out_dir: pathlib.Path
    arms: tuple[str, ...] = ARMS
    # The authors' scenarios [first, last) the screen reads; the test set is the first
    # eval.num_scenarios, so the two must not overlap.
    selection: tuple[int, int] = (250, 1000)
    secondary: bool = True
    # Only the screen: does the base model prefer the deceptive room beyond position at all?
    screen_only: bool = False
    # A directory (per_seed.csv, screen.json, plan.json) kept beyond OUT: seeds complete there are
    # taken from it, and each seed finished here is added to it.
    record: pathlib.Path | None = None

    def __post_init__(self):
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"--seeds: give distinct seeds >= 0, got {list(self.seeds)}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or "soo" not in self.arms:
            raise ValueError(f"--arms: {list(self.arms)}: choose from {list(ARMS)}, soo included")
        if not self.scenarios_file:
            raise ValueError("--scenarios: the authors' false_recommendation_scenarios.json is required "
                             "(README, 'Evaluation', shows how to make it)")
        if not pathlib.Path(self.scenarios_file).is_file():
            raise FileNotFoundError(f"--scenarios {self.scenarios_file}: no such file; make it from the authors' "
                                    f"pickle as README 'Evaluation' shows")
        if self.record is not None and self.record.exists() and not self.record.is_dir():
            raise ValueError(f"--record {self.record}: not a directory; give the directory that holds (or will "
                             f"hold) per_seed.csv")
        read_record(self)  # a damaged record is refused now, not after the screen
        first, last = self.selection
        if not 0 <= first < last:
            raise ValueError(f"selection: need 0 <= first < last, got {self.selection}")

    def arm_dir(self, seed: int, arm: str) -> pathlib.Path:
        return self.out_dir / f"seed_{seed}" / arm

    def adapter_dir(self, seed: int, arm: str) -> pathlib.Path:
        return self.arm_dir(seed, arm) / "train" / "adapter"


def arm_config(config: ml_collections.ConfigDict, arm: str, seed: int, train_dir: pathlib.Path
               ) -> ml_collections.ConfigDict:
    """The run config of a trained arm: the SOO config with the arm's one difference."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.train.seed = seed
        c.train.out_dir = str(train_dir)
        c.train.evaluate = False
        c.train.export_adapter = True
        if arm == "lm":
            c.loss.objective = "lm"
        elif arm == "mismatched":
            c.data.pairing = "mismatched"
        elif arm != "soo":
            raise ValueError(f"{arm!r} is not a trained arm")
    return c


def stage_eval_config(config: ml_collections.ConfigDict, plan: ControlledPlan, stage: str) -> ml_collections.ConfigDict:
    """The evaluation of a stage on the test set (the authors' first eval.num_scenarios)."""
    e = ml_collections.ConfigDict(config.eval.to_dict())
    e.scenarios_file = plan.scenarios_file
    e.self_control = False
    e.honesty_baseline = False
    e.swap_room_order = True
    if stage == "primary":
        e.suites = "forced_choice,latent,capability"
        e.capability.kl = True
        e.capability.answers = False
        e.capability.mtbench_questions = ""
    elif stage == "secondary":
        e.suites = "main"
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return e


def experiment_settings(config: ml_collections.ConfigDict, plan: ControlledPlan) -> dict:
    from soo_jax.eval.config import run_not_result_changing

    settings = run_dir.without(run_dir.flatten(config.to_dict()), run_not_result_changing())
    settings["scenarios_file.sha256"] = run_dir.file_digest(plan.scenarios_file)
    settings["selection"] = list(plan.selection)
    return settings


# --- Values per piece --------------------------------------------------------------------------

def primary_values(results: dict, view: str) -> dict:
    fc = results["forced_choice"][view]
    latent = results["latent"][view]
    kl = results.get("capability", {}).get("kl", {})
    return {"fc_log_odds": fc["log_odds"]["mean"], "fc_deceptive_choice": fc["deceptive_choice"],
            "fc_position_effect": fc["position_effect"], "latent_site": latent["training_site"]["value"],
            "latent_all": latent["score"], "kl": kl.get("mean_kl_base_tuned", 0.0 if view == "base" else None)}


def secondary_values(results: dict, view: str) -> dict:
    condition = results["deception"][view]["burglar"]
    original, swapped = condition["original"], condition["swapped"]
    balanced = condition["order_balanced"]
    values = {"deceptive": original["deceptive_rate"], "honest": original["honest_rate"],
              "neither": (original["neither_rate"] + swapped["neither_rate"]) / 2,
              "order_balanced": balanced["order_balanced_deception_rate"],
              "position_bias": balanced["position_bias_rate"]}
    for name, rates in (("original", original), ("swapped", swapped)):
        for outcome in ("deceptive", "honest", "neither"):
            values[f"{outcome}_{name}"] = rates[f"{outcome}_rate"]
    answered = [(r["deceptive_rate"], r["honest_rate"]) for r in (original, swapped)]
    # Deceptive share among answered scenarios, each order weighted equally.
    shares = [d / (d + h) * 100 for d, h in answered if d + h > 0]
    values["order_balanced_answered"] = float(np.mean(shares)) if len(shares) == 2 else None
    return values


# --- Analysis -----------------------------------------------------------------------------------

def analyse(per_seed: dict[str, dict[int, dict]], base: dict, plan_seeds: tuple[int, ...]) -> dict:
    """per_seed[arm][seed] = {endpoint: value}. Per arm: each endpoint's t-summary over seeds; per
    control: the paired difference SOO - control over the seeds both have; the primary test."""
    endpoints = PRIMARY_ENDPOINTS + SECONDARY_ENDPOINTS
    arms = {arm: {e: t_summary([seeds[s].get(e) for s in sorted(seeds)]) for e in endpoints}
            for arm, seeds in per_seed.items()}
    paired = {}
    soo = per_seed.get("soo", {})
    for control in CONTROLS:
        other = per_seed.get(control, {})
        common = sorted(set(soo) & set(other))
        paired[control] = {e: t_summary([None if soo[s].get(e) is None or other[s].get(e) is None
                                         else soo[s][e] - other[s][e] for s in common]) for e in endpoints}
        paired[control]["seeds"] = common
    primary = paired[PRIMARY_CONTROL]["fc_log_odds"]
    return {"base": base, "arms": arms, "paired": paired,
            "primary": {"endpoint": "fc_log_odds", "control": PRIMARY_CONTROL, "test": primary,
                        "seeds_done": len(paired[PRIMARY_CONTROL]["seeds"]), "seeds_registered": len(plan_seeds),
                        "alpha": 0.05}}


def _fmt(summary: dict | None, digits: int = 3) -> str:
    if summary is None:
        return "–"
    text = f"{summary['mean']:+.{digits}f}" if digits == 3 else f"{summary['mean']:.{digits}f}"
    if "low" in summary:
        text += f" [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"
    return text + f" (n={summary['n']})"


ENDPOINT_LABELS = {
    "fc_log_odds": ("forced-choice log-odds, deceptive - honest, order-balanced", 3),
    "fc_deceptive_choice": ("forced-choice deceptive choice %", 1),
    "fc_position_effect": ("forced-choice position effect (log-odds, original - swapped)", 3),
    "latent_site": ("latent SOO at the training site", 4),
    "latent_all": ("latent SOO, all linear layers", 4),
    "kl": ("KL(base || model) on the general prompts, nats", 4),
    "deceptive": ("generated: deceptive % (paper metric, original order)", 1),
    "honest": ("generated: honest % (original order)", 1),
    "neither": ("generated: neither %, mean of both orders", 1),
    "order_balanced": ("generated: order-balanced deceptive %", 1),
    "deceptive_swapped": ("generated: deceptive % (swapped order)", 1),
    "honest_swapped": ("generated: honest % (swapped order)", 1),
    "order_balanced_answered": ("generated: order-balanced deceptive % among answered", 1),
    "position_bias": ("generated: position bias %", 1),
}


def screen_line(screen: dict) -> str:
    """The screen's reading: does the base model prefer the deceptive room beyond position?"""
    fc = screen["forced_choice"]["base"]
    lo = fc["log_odds"]
    verdict = ("a preference for the deceptive room beyond position" if lo["low"] > 0 else
               "no preference for the deceptive room beyond position: SOO cannot be shown to remove one")
    return (f"**Screen** (base model, authors' scenarios {screen['selection'][0]}-{screen['selection'][1] - 1}, "
            f"both orders): order-balanced log-odds {lo['mean']:+.3f} [{lo['low']:+.3f}, {lo['high']:+.3f}] "
            f"(95% t-interval over scenarios), deceptive choice {fc['deceptive_choice']:.1f}%, position effect "
            f"{fc['position_effect']:+.3f}: {verdict}.")


def screen_scenarios_csv(records_file: pathlib.Path, first: int) -> str:
    """The screen's per-scenario data: the authors' scenario index, the room order and both rooms'
    log-probabilities, from its forced_choice.jsonl (scenario i there is the authors' first + i)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("authors_scenario", "order", "logprob_deceptive", "logprob_honest"))
    with open(records_file) as f:
        for line in f:
            r = json.loads(line)
            writer.writerow((first + r["scenario"], r["order"], repr(r["logprob_deceptive"]), repr(r["logprob_honest"])))
    return out.getvalue()


def screen_markdown(screen: dict, model: str) -> str:
    return "\n".join([f"# Screen: {model}", "", screen_line(screen), ""])


def markdown_report(analysis: dict, screen: dict | None, meta: dict) -> str:
    lines = ["# Controlled SOO experiment", ""]
    p = analysis["primary"]
    test = p["test"]
    status = ("final" if p["seeds_done"] == p["seeds_registered"] else
              f"interim: {p['seeds_done']} of {p['seeds_registered']} registered seeds")
    if screen is not None:
        lines += [screen_line(screen), ""]
    if test is not None and "p" in test:
        lines += [f"**Primary test ({status})**: SOO - LM control, order-balanced forced-choice log-odds on the test "
                  f"set, paired over seeds: {test['mean']:+.4f} [{test['low']:+.4f}, {test['high']:+.4f}], "
                  f"t({test['n'] - 1}) = {test['t']:.2f}, two-sided p = {test['p']:.3g} (alpha {p['alpha']}).", ""]
    else:
        lines += [f"**Primary test ({status})**: not enough paired seeds yet.", ""]
    arms = list(analysis["arms"])
    lines += ["Each cell: mean [95% t-interval over seeds] (n seeds); base: the base model once.", "",
              "| endpoint | base | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for endpoint, (label, digits) in ENDPOINT_LABELS.items():
        base_value = analysis["base"].get(endpoint)
        cells = [_fmt(analysis["arms"][a].get(endpoint), digits) for a in arms]
        if all(c == "–" for c in cells) and base_value is None:
            continue
        base_text = "–" if base_value is None else (f"{base_value:+.3f}" if digits == 3 else f"{base_value:.{digits}f}")
        lines.append(f"| {label} | {base_text} | " + " | ".join(cells) + " |")
    lines += ["", "Paired SOO - control per seed: mean [95% t-interval], two-sided paired t-test p.", "",
              "| endpoint | " + " | ".join(f"SOO - {c}" for c in analysis["paired"]) + " |",
              "|---|" + "---|" * len(analysis["paired"])]
    for endpoint, (label, digits) in ENDPOINT_LABELS.items():
        cells = []
        for control, by_endpoint in analysis["paired"].items():
            s = by_endpoint.get(endpoint)
            cells.append("–" if s is None else _fmt(s, digits) + (f", p = {s['p']:.3g}" if "p" in s else ""))
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    # A resumed experiment's earlier invocations are not summed: plan.json keeps the last one's.
    lines += ["", f"Seeds: {', '.join(map(str, meta['seeds']))}; wall time of the command's last run "
              f"{meta['wall_time_s'] / 60:.1f} min (earlier runs that it resumed not included).", ""]
    return "\n".join(lines)


def per_seed_csv(per_seed: dict[str, dict[int, dict]], base: dict) -> str:
    columns = PRIMARY_ENDPOINTS + SECONDARY_ENDPOINTS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("arm", "seed", *columns))
    writer.writerow(("base", "", *("" if base.get(c) is None else repr(base[c]) for c in columns)))
    for arm, seeds in per_seed.items():
        for seed in sorted(seeds):
            writer.writerow((arm, seed, *("" if seeds[seed].get(c) is None else repr(seeds[seed][c])
                                          for c in columns)))
    return out.getvalue()


def read_per_seed_csv(text: str, source: str = "per_seed.csv") -> tuple[dict[str, dict[int, dict]], dict]:
    """`per_seed_csv`'s output back into (per_seed, base); ValueError naming `source` otherwise."""
    def bad(why: str) -> ValueError:
        return ValueError(f"{source}: not a per_seed.csv of the controlled experiment ({why}); repair it from git or "
                          f"give another directory")

    reader = csv.DictReader(io.StringIO(text))
    known = set(PRIMARY_ENDPOINTS + SECONDARY_ENDPOINTS)
    columns = reader.fieldnames or []
    if columns[:2] != ["arm", "seed"] or not set(columns[2:]) <= known:
        raise bad(f"columns {columns[:4]}...; expected arm, seed, then endpoints")
    per_seed: dict[str, dict[int, dict]] = {}
    base: dict = {}
    for line, row in enumerate(reader, start=2):
        try:
            values = {k: float(v) for k, v in row.items() if k not in ("arm", "seed") and v not in ("", None)}
            if row["arm"] == "base":
                base = values
            elif row["arm"] in ARMS:
                per_seed.setdefault(row["arm"], {})[int(row["seed"])] = values
            else:
                raise ValueError(f"unknown arm {row['arm']!r}")
        except (TypeError, ValueError) as err:
            raise bad(f"line {line}: {err}") from None
    return per_seed, base


def report_from_dir(directory: pathlib.Path) -> str:
    """results.md recomputed from a directory's per_seed.csv, screen.json and plan.json (an
    experiment's OUT, or the copy of those three files under docs/results/data/)."""
    per_seed, base = read_per_seed_csv((directory / "per_seed.csv").read_text(), str(directory / "per_seed.csv"))
    plan = run_dir.read_json(directory / "plan.json") if (directory / "plan.json").is_file() else {}
    if not isinstance(plan, dict) or not isinstance(plan.get("seeds"), list) or not isinstance(plan.get("arms"), list):
        raise ValueError(f"{directory / 'plan.json'}: missing or without its seeds and arms; it is written beside "
                         f"per_seed.csv by every run of the experiment")
    screen = run_dir.read_json(directory / "screen.json") if (directory / "screen.json").is_file() else None
    for arm in plan["arms"]:
        per_seed.setdefault(arm, {})
    analysis = analyse({arm: per_seed[arm] for arm in plan["arms"]}, base, tuple(plan["seeds"]))
    return markdown_report(analysis, screen, {"seeds": plan["seeds"], "wall_time_s": plan.get("wall_time_s", 0.0)})


# --- The record of finished seeds ----------------------------------------------------------------

def seed_complete(per_seed: dict[str, dict[int, dict]], seed: int, arms: tuple[str, ...], secondary: bool) -> bool:
    """Every arm of `seed` has its primary values (and, when asked for, its generated ones)."""
    def done(values: dict | None) -> bool:
        return (values is not None and all(values.get(e) is not None for e in PRIMARY_ENDPOINTS)
                and (not secondary or values.get("deceptive") is not None))
    return all(done(per_seed.get(arm, {}).get(seed)) for arm in arms)


def first_mismatch(recorded: dict, computed: dict) -> str | None:
    """The first endpoint both hold on which a recorded row and this machine's differ, or None."""
    for endpoint, value in computed.items():
        if value is None or recorded.get(endpoint) is None:
            continue
        if not math.isclose(recorded[endpoint], value, rel_tol=RECORD_RTOL, abs_tol=1e-9):
            return f"{endpoint}: recorded {recorded[endpoint]!r}, computed here {value!r}"
    return None


def read_record(plan: ControlledPlan) -> tuple[dict[str, dict[int, dict]], dict]:
    """(per_seed, base) of the plan's record directory; empty when it holds none yet."""
    if plan.record is None or not (plan.record / "per_seed.csv").is_file():
        return {}, {}
    return read_per_seed_csv((plan.record / "per_seed.csv").read_text(), str(plan.record / "per_seed.csv"))


def recorded_seeds(plan: ControlledPlan, recorded: dict[str, dict[int, dict]], recorded_base: dict,
                   base_values: dict) -> dict[str, dict[int, dict]]:
    """The seeds of a record (`read_record`) that are complete for this plan, after checking that
    this machine reproduces the record's base model; raises ValueError when it does not."""
    if not recorded:
        return {}
    mismatch = first_mismatch(recorded_base, base_values)
    if mismatch:
        raise ValueError(f"--record {plan.record}: this machine does not reproduce the recorded base model "
                         f"({mismatch}); finish the experiment where it started or give a new --record")
    complete = [s for s in plan.seeds if seed_complete(recorded, s, plan.arms, plan.secondary)]
    return {arm: {s: recorded[arm][s] for s in complete} for arm in plan.arms}


# --- Running ------------------------------------------------------------------------------------

def run_controlled(config: ml_collections.ConfigDict, plan: ControlledPlan, *, progress=None,
                   fresh: bool = False) -> dict:
    """Runs (or resumes) every piece and writes the analysis; `fresh` moves an old OUT aside."""
    from soo_jax.experiments.experiment import check_settings

    check_settings(config)  # every value before OUT is claimed (issue 25)
    with run_dir.claim(plan.out_dir, experiment_settings(config, plan), kind="controlled experiment", fresh=fresh,
                       fresh_hint=FRESH_HINT):
        return _run(config, plan, progress=progress)


def _run(config: ml_collections.ConfigDict, plan: ControlledPlan, *, progress=None) -> dict:
    from soo_jax.data.general_prompts import load_general_prompt_records
    from soo_jax.eval.capability import base_view
    from soo_jax.eval.config import parse_csv
    from soo_jax.eval.report import write_report
    from soo_jax.eval.runtime import load_base, tuned_view
    from soo_jax.eval.suite import forced_choice_views, run_suites
    from soo_jax.train.loop import run_training

    started = time.time()
    model_path, base, tokenizer = load_base(config)
    primary_eval = stage_eval_config(config, plan, "primary")
    secondary_eval = stage_eval_config(config, plan, "secondary")

    # The screen: the base model's forced choice on the selection set.
    first, last = plan.selection
    selection = [with_answer_suffix(s, config.eval.answer_suffix)
                 for s in load_reference_scenarios(plan.scenarios_file)[first:last]]
    if len(selection) < 2:
        raise ValueError(f"{plan.scenarios_file} has no selection scenarios {first}..{last - 1}")
    if first < config.eval.num_scenarios:
        raise ValueError(f"selection scenarios {first}.. overlap the test set (the first {config.eval.num_scenarios})")
    screen_settings = {**piece_settings(primary_eval, None), "selection": [first, first + len(selection)]}

    def screen(_log):
        _say(f"screen: base model, forced choice on the authors' scenarios {first}..{first + len(selection) - 1} "
             f"x 2 orders")
        summaries, records = forced_choice_views(primary_eval, {"base": base}, tokenizer, selection, progress=progress)
        write_report({"forced_choice": summaries, "selection": [first, first + len(selection)]}, records,
                     str(plan.out_dir / "screen"))

    screen_results = cached_piece(plan.out_dir / "screen", screen_settings, screen)
    screen_summary = {"forced_choice": screen_results["forced_choice"], "selection": screen_results["selection"]}
    scenarios_text = screen_scenarios_csv(plan.out_dir / "screen" / "forced_choice.jsonl", first)
    for directory in (plan.out_dir, plan.record):
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            run_dir.atomic_write_text(directory / "screen_scenarios.csv", scenarios_text)
            run_dir.atomic_write_json(directory / "screen.json", screen_summary)
    if plan.screen_only:
        run_dir.atomic_write_text(plan.out_dir / "results.md", screen_markdown(screen_summary, model_path))
        return {"screen": screen_summary, "meta": {"model": model_path, "screen_only": True}}

    def evaluate_base(stage, eval_config):
        directory = plan.out_dir / "base" / stage
        return cached_piece(directory, piece_settings(eval_config, None), lambda log: write_report(
            *run_suites(eval_config, tokenizer, base_model=base, progress=progress, answer_log=log, log=_say),
            str(directory)))

    base_values = primary_values(evaluate_base("primary", primary_eval), "base")
    per_seed: dict[str, dict[int, dict]] = {arm: {} for arm in plan.arms}
    general_prompts = [r.prompt for r in load_general_prompt_records(parse_csv(primary_eval.capability.categories)
                                                                     or None)]

    def evaluate_arm(seed, arm, stage, eval_config):
        directory = plan.arm_dir(seed, arm) / stage
        adapter = plan.adapter_dir(seed, arm)
        tuned = tuned_view(base, adapter=str(adapter))
        reference = base_view(tuned)
        return cached_piece(directory, piece_settings(eval_config, adapter), lambda log: write_report(*run_suites(
            eval_config, tokenizer, base_model=reference, tuned_model=tuned, progress=progress,
            generate_for=("tuned",), answer_log=log, log=_say), str(directory)))

    def write_analysis(final: bool) -> dict:
        analysis = analyse(per_seed, base_values, plan.seeds)
        meta = {"model": model_path, "seeds": list(plan.seeds), "arms": list(plan.arms),
                "scenarios_file": plan.scenarios_file, "selection": list(plan.selection), "final": final,
                "wall_time_s": time.time() - started, "git_commit": run_dir.git_commit(),
                "config": json.loads(config.to_json_best_effort())}
        aggregate = {"analysis": analysis, "screen": screen_summary, "per_seed": per_seed, "meta": meta}
        run_dir.atomic_write_json(plan.out_dir / "results.json", aggregate)
        run_dir.atomic_write_text(plan.out_dir / "results.md", markdown_report(analysis, screen_summary, meta))
        for directory in (plan.out_dir, plan.record):
            if directory is None:
                continue
            directory.mkdir(parents=True, exist_ok=True)
            run_dir.atomic_write_text(directory / "per_seed.csv", per_seed_csv(per_seed, base_values))
            run_dir.atomic_write_json(directory / "plan.json", {"seeds": list(plan.seeds), "arms": list(plan.arms),
                                                                "wall_time_s": meta["wall_time_s"]})
        return aggregate

    base_secondary: dict = {}
    if plan.secondary:
        _say("base model: generated answers on the test set (secondary endpoints)")
        base_secondary = secondary_values(evaluate_base("secondary", secondary_eval), "base")
    per_seed_partial, recorded_base = read_record(plan)
    recorded = recorded_seeds(plan, per_seed_partial, recorded_base, {**base_values, **base_secondary})
    base_values.update(base_secondary)
    for arm, seeds in recorded.items():
        per_seed[arm].update(seeds)
    if recorded.get("soo"):
        _say(f"seeds {sorted(recorded['soo'])} taken from the record {plan.record} (this machine reproduces its "
             f"base model)")
    todo = [s for s in plan.seeds if s not in per_seed["soo"]]
    for done, seed in enumerate(todo):
        tick = time.time()
        for arm in plan.arms:
            if arm in TRAINED_ARMS:
                if not (plan.adapter_dir(seed, arm) / "adapter_config.json").is_file():
                    _say(f"seed {seed}, arm {arm}: training")
                    run_training(arm_config(config, arm, seed, plan.arm_dir(seed, arm) / "train"))
            else:
                _perturbation(plan, config, seed, per_seed["soo"][seed]["kl"], base, model_path, tokenizer,
                              general_prompts, primary_eval)
            per_seed[arm][seed] = primary_values(evaluate_arm(seed, arm, "primary", primary_eval), "tuned")
        if plan.secondary:
            for arm in plan.arms:
                _say(f"seed {seed}, arm {arm}: generated answers on the test set (secondary endpoints)")
                per_seed[arm][seed].update(secondary_values(evaluate_arm(seed, arm, "secondary", secondary_eval),
                                                            "tuned"))
        earlier = [per_seed_partial.get(arm, {}).get(seed) for arm in plan.arms]
        if any(earlier):
            _say(f"seed {seed}: recorded partial values reproduced: " + ", ".join(
                f"{arm} {first_mismatch(values, per_seed[arm][seed]) or 'equal'}"
                for arm, values in zip(plan.arms, earlier) if values))
        write_analysis(final=False)
        left = (time.time() - started) / (done + 1) * (len(todo) - done - 1)
        _say(f"seed {seed} done in {(time.time() - tick) / 60:.1f} min ({len(plan.seeds) - len(todo) + done + 1}/"
             f"{len(plan.seeds)} seeds; about {left / 60:.0f} min left); interim analysis in "
             f"{plan.out_dir / 'results.md'}")
    return write_analysis(final=True)


def _perturbation(plan: ControlledPlan, config: ml_collections.ConfigDict, seed: int, target_kl: float,
                  base, model_path: str, tokenizer, prompts: list[str], eval_config: ml_collections.ConfigDict) -> None:
    """The perturbation arm's adapter for `seed`, KL-matched to the SOO arm's; kept once made. The
    adapter is attached to a view of `base` (its weights shared, `base` left as it is)."""
    from flax import nnx

    from soo_jax.experiments.perturbation import matched_perturbation
    from soo_jax.peft_io import export_peft_adapter
    from soo_jax.train.config import lora_config

    directory = plan.arm_dir(seed, "perturbation") / "train"
    if (directory / "adapter" / "adapter_config.json").is_file():
        return
    _say(f"seed {seed}, arm perturbation: random LoRA update scaled to the SOO arm's KL {target_kl:.4g}")
    model = nnx.merge(*nnx.split(base))
    calibration = matched_perturbation(model, lora_config(config), tokenizer, prompts, target_kl=target_kl, seed=seed,
                                       chat_template=eval_config.chat_template,
                                       batch_size=eval_config.capability.batch_size, log=_say)
    directory.mkdir(parents=True, exist_ok=True)
    export_peft_adapter(model, lora_config(config), directory / "adapter", base_model=model_path)
    run_dir.atomic_write_json(directory / "calibration.json", dataclasses.asdict(calibration))
