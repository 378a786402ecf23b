"""Runs the selected evaluation suites on a base model and (optionally) its fine-tuned version.

Suites (`soo_jax.eval.config.SUITES`):
  forced_choice   the main burglar set in both room orders, each room's log-probability after a
                  fixed answer prefix (no generation; soo_jax.eval.forced_choice)
  main            burglar set, self-referencing control, honesty-prompt baseline (base only)
  generalisation  7 wording variants, Treasure Hunt, Escape Room, Perspectives
  latent          latent SOO of each model, and before/after when both are given
  capability      KL(base || tuned) on the general prompts, greedy answers side by side,
                  MT-Bench answers (if a question file is configured)
Every deception scenario is also asked with its rooms swapped when `swap_room_order` is on.
With a `log`, each suite says what it is about to do (how many prompts, which conditions) and
prints its result line as it finishes; every bar is named after its suite and conditions.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import ml_collections

from soo_jax.data import scenarios as scenarios_lib
from soo_jax.data.general_prompts import load_general_prompt_records
from soo_jax.data.pairs import latent_soo_pairs
from soo_jax.eval import capability, deception, forced_choice, latent, mtbench
from soo_jax.eval.answer_log import AnswerLog
from soo_jax.eval.config import parse_csv, parse_layers, parse_suites, resolve_soo_layer
from soo_jax.eval.report import capability_summary, deception_summary, forced_choice_summary, latent_summary
from soo_jax.eval.scoring import condition_name

__all__ = ["GeneratorFactory", "ProgressFactory", "Log", "forced_choice_views", "model_generator_factory",
           "run_suites"]

# (model, model label, max_new_tokens) -> Generate. Tests inject fakes here.
GeneratorFactory = Callable[[object, str, int], deception.Generate]
# (description, unit="prompt") -> Progress callback, e.g. a tqdm bar.
ProgressFactory = Callable[..., deception.Progress | None]
# One line of what the run is doing, e.g. print to stderr.
Log = Callable[[str], None]


def model_generator_factory(tokenizer, config: ml_collections.ConfigDict,
                            progress: ProgressFactory | None = None,
                            task: str = "generating") -> GeneratorFactory:
    """Generators on our KV-cache decoder with the config's chat-template switch, system
    prompt and batch size; one progress bar per generation call, "{task} ({model label})"."""
    def factory(model, label: str, max_new_tokens: int) -> deception.Generate:
        def generate(prompts, stop_texts=None, on_batch=None):
            bar = progress(f"{task} ({label})") if progress else None
            return deception.make_generator(
                model, tokenizer, max_new_tokens=max_new_tokens, chat=config.chat_template,
                system=config.system_prompt or None, batch_size=config.batch_size,
                progress=bar)(prompts, stop_texts=stop_texts, on_batch=on_batch)
        generate.stops_on_texts = True
        generate.reports_batches = True
        return generate
    return factory


def _deception_scenarios(config: ml_collections.ConfigDict, suite: str, label: str):
    n = config.num_scenarios
    if suite == "main":
        return scenarios_lib.main_scenarios(
            n, scenarios_file=config.scenarios_file, seed=config.scenario_seed,
            answer_suffix=config.answer_suffix, self_control=config.self_control,
            honesty_prompt=config.honesty_baseline and label == "base")
    return scenarios_lib.generalisation_scenarios_for(
        n, combinations_file=config.combinations_file, seed=config.generalisation_seed,
        answer_suffix=config.answer_suffix, wording=config.wording,
        perspectives=config.perspectives)


def conditions_text(names: list[str]) -> str:
    """Conditions for a bar's name: all of them when few, else how many."""
    return ", ".join(names) if len(names) <= 3 else f"{len(names)} conditions"


def _deception_plan(config: ml_collections.ConfigDict, suite: str, label: str,
                    scenarios: list) -> tuple[str, str]:
    """(bar name, start line) for one model's pass over a deception suite."""
    names = list(dict.fromkeys(condition_name(s) for s in scenarios))
    orders = 2 if config.swap_room_order else 1
    both = ", each also with its rooms swapped" if orders == 2 else ""
    line = (f"[{suite}] {label}: {orders * len(scenarios)} prompts, {len(scenarios) // len(names)} "
            f"scenarios x {len(names)} conditions ({', '.join(names)}){both}; batches of "
            f"{config.batch_size}, the first of each prompt width compiles first")
    return f"{suite}: {conditions_text(names)}", line


def forced_choice_views(config: ml_collections.ConfigDict, models: dict, tokenizer, scenarios: list | None = None,
                        progress: ProgressFactory | None = None, log: Log | None = None) -> tuple[dict, list[dict]]:
    """The forced-choice endpoint of each model view ({label: model}) on `scenarios` (default: the
    main burglar set), asked as `config` (an eval config) asks: ({label: summary}, records)."""
    fc = config.forced_choice
    if scenarios is None:
        scenarios = scenarios_lib.main_scenarios(
            config.num_scenarios, scenarios_file=config.scenarios_file, seed=config.scenario_seed,
            answer_suffix=config.answer_suffix, self_control=False, honesty_prompt=False)
    if log:
        log(f"[forced_choice] {', '.join(models)}: {len(scenarios)} burglar scenarios x 2 room orders, each room's "
            f"log-probability after {fc.answer_prefix!r}; batches of {fc.batch_size}, the first of each prompt "
            f"width compiles first")
    summaries, records = {}, []
    for label, model in models.items():
        bar = progress(f"forced_choice ({label})") if progress else None
        view_records = forced_choice.score_forced_choice(
            model, tokenizer, scenarios, view=label, chat_template=config.chat_template,
            system=config.system_prompt or None, answer_prefix=fc.answer_prefix, batch_size=fc.batch_size,
            progress=bar)
        summaries[label] = forced_choice.summarise_forced_choice(view_records)
        records += [{"suite": "forced_choice", **r} for r in view_records]
    return summaries, records


def _latent(config: ml_collections.ConfigDict, models: dict, tokenizer,
            progress: ProgressFactory | None, log: Log) -> dict:
    lc = config.latent
    pairs = latent_soo_pairs(trailing_ellipsis=lc.trailing_ellipsis)
    sites = parse_csv(lc.sites)
    log(f"[latent] latent SOO of {', '.join(models)}: {len(pairs)} probe pairs in batches of "
        f"{lc.batch_size}, {len(sites)} sites per layer (one compilation per model graph)")
    out = {}
    for label, model in models.items():
        out[label] = latent.latent_soo(
            model, tokenizer, pairs, sites=sites, layers=parse_layers(lc.layers),
            chat_template=lc.chat_template, soo_site=lc.soo_site,
            soo_layer=resolve_soo_layer(lc.soo_layer, model.config.num_layers),
            soo_pooling=lc.soo_pooling, batch_size=lc.batch_size,
            progress=progress(f"latent: probe pairs ({label})", unit="pair") if progress else None)
    if "tuned" in out:
        out["comparison"] = latent.compare_latent(out["base"], out["tuned"])
    return out


def _capability(config: ml_collections.ConfigDict, models: dict, generating: dict, tokenizer,
                generators_for: Callable[[str], GeneratorFactory], out_dir: str | None,
                model_ids: dict, progress: ProgressFactory | None, log: Log) -> dict:
    cc = config.capability
    records = load_general_prompt_records(parse_csv(cc.categories) or None)
    prompts = [r.prompt for r in records]
    out: dict = {}
    if cc.kl:
        if "tuned" in models:
            log(f"[capability] next-token KL(base || tuned) on {len(prompts)} general prompts, "
                f"batches of {cc.batch_size} (one forward pass per model and batch)")
            out["kl"] = capability.next_token_kl(
                models["base"], models["tuned"], tokenizer, prompts,
                chat_template=config.chat_template, batch_size=cc.batch_size)
        else:
            out["kl"] = {"skipped": "no fine-tuned model (adapter or checkpoint) to compare"}
    if cc.answers:
        log(f"[capability] greedy answers of {', '.join(generating)} to {len(prompts)} general "
            f"prompts, up to {cc.answer_max_new_tokens} new tokens each")
        generators = generators_for(f"capability: {len(prompts)} general prompts")
        answers = {label: generators(model, label, cc.answer_max_new_tokens)(prompts)
                   for label, model in generating.items()}
        out["answers"] = [{"id": r.id, "category": r.category, "prompt": r.prompt,
                           **{label: answers[label][i] for label in generating}}
                          for i, r in enumerate(records)]
    if cc.mtbench_questions:
        if out_dir is None:
            raise ValueError("MT-Bench answers need an output directory")
        log(f"[capability] MT-Bench answers from {cc.mtbench_questions}, up to "
            f"{cc.mtbench_max_new_tokens} new tokens per turn (questions already answered are skipped)")
        out["mtbench"] = {}
        for label, model in generating.items():
            model_id = model_ids[label]
            answer_file = os.path.join(out_dir, "mt_bench", "model_answer", f"{model_id}.jsonl")
            bar = progress(f"capability: MT-Bench ({label})", unit="question") if progress else None
            done = [0]

            def tick(_question, bar=bar, done=done):
                done[0] += 1
                if bar is not None:
                    bar(done[0], 0)

            answered = mtbench.generate_answers(
                cc.mtbench_questions, answer_file,
                capability.make_chat_function(model, tokenizer, seed=config.seed,
                                              system=config.system_prompt or None),
                model_id, max_new_tokens=cc.mtbench_max_new_tokens, progress=tick)
            out["mtbench"][label] = {"model_id": model_id, "answer_file": answer_file,
                                     "answered_now": answered}
    return out


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_suites(config: ml_collections.ConfigDict, tokenizer, *, base_model, tuned_model=None,
               generators: GeneratorFactory | None = None,
               progress: ProgressFactory | None = None, out_dir: str | None = None,
               model_ids: dict[str, str] | None = None,
               generate_for: tuple[str, ...] | None = None,
               log: Log | None = None, answer_log: AnswerLog | None = None) -> tuple[dict, list[dict]]:
    """Run `config.suites` (an eval config, `default_eval_config()`); returns (results,
    per-response records). `results["deception"][label][condition]` is a `summarise`
    condition summary; labels are "base" and, with `tuned_model`, "tuned".

    `generate_for` limits the generation-based parts (deception suites, side-by-side answers,
    MT-Bench) to those labels, e.g. ("tuned",) when the base model's answers are already known;
    latent SOO and the KL retention still see both models. `log` gets a line before each
    stage and one with each suite's result as it finishes. With an `answer_log` every
    generated answer is stored as its batch finishes and stored answers are not asked again."""
    suites = parse_suites(config.suites)
    log = log or (lambda _line: None)
    models = {"base": base_model} | ({"tuned": tuned_model} if tuned_model is not None else {})
    generating = {label: m for label, m in models.items() if generate_for is None or label in generate_for}

    def generators_for(task: str) -> GeneratorFactory:
        factory = generators or model_generator_factory(tokenizer, config, progress, task)
        if answer_log is None:
            return factory
        return lambda model, label, max_new_tokens: answer_log.wrap(factory(model, label, max_new_tokens), label,
                                                                    max_new_tokens)

    model_ids = model_ids or {label: label for label in models}
    results: dict = {"suites": list(suites), "models": list(models), "timing_s": {}}
    records: list[dict] = []
    for suite in suites:
        start = time.perf_counter()
        if suite in ("main", "generalisation"):
            for label, model in generating.items():
                scenarios = _deception_scenarios(config, suite, label)
                task, plan = _deception_plan(config, suite, label, scenarios)
                log(plan)
                tick = time.perf_counter()
                summary, suite_records = deception.score_scenarios(
                    generators_for(task)(model, label, config.max_new_tokens), scenarios,
                    swap_room_order_too=config.swap_room_order, whole_words=config.whole_words,
                    stop_when_decided=config.stop_when_decided)
                results.setdefault("deception", {}).setdefault(label, {}).update(summary)
                records += [{"model": label, "suite": suite, **r} for r in suite_records]
                log(f"[{suite}] {label} done in {_minutes(time.perf_counter() - tick)}: "
                    f"{deception_summary(summary)}")
        elif suite == "forced_choice":
            results["forced_choice"], suite_records = forced_choice_views(config, generating, tokenizer,
                                                                          progress=progress, log=log)
            records += suite_records
            log(f"[forced_choice] done in {_minutes(time.perf_counter() - start)}: "
                f"{forced_choice_summary(results['forced_choice'])}")
        elif suite == "latent":
            results["latent"] = _latent(config, models, tokenizer, progress, log)
            log(f"[latent] done in {_minutes(time.perf_counter() - start)}: "
                f"{latent_summary(results['latent'])}")
        elif suite == "capability":
            results["capability"] = _capability(config, models, generating, tokenizer,
                                                generators_for, out_dir, model_ids, progress, log)
            log(f"[capability] done in {_minutes(time.perf_counter() - start)}: "
                f"{capability_summary(results['capability'])}")
        results["timing_s"][suite] = time.perf_counter() - start
    return results, records
