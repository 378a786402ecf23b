"""Runs the selected evaluation suites on a base model and (optionally) its fine-tuned version.

Suites (`soo_jax.eval.config.SUITES`):
  main            burglar set, self-referencing control, honesty-prompt baseline (base only)
  generalisation  7 wording variants, Treasure Hunt, Escape Room, Perspectives
  latent          latent SOO of each model, and before/after when both are given
  capability      KL(base || tuned) on the general prompts, greedy answers side by side,
                  MT-Bench answers (if a question file is configured)
Every deception scenario is also asked with its rooms swapped when `swap_room_order` is on.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import ml_collections

from soo_jax.data.general_prompts import load_general_prompt_records
from soo_jax.data.pairs import latent_soo_pairs
from soo_jax.eval import capability, deception, latent, mtbench
from soo_jax.eval.config import parse_csv, parse_layers, parse_suites, resolve_soo_layer

__all__ = ["GeneratorFactory", "ProgressFactory", "model_generator_factory", "run_suites"]

# (model, model label, max_new_tokens) -> Generate. Tests inject fakes here.
GeneratorFactory = Callable[[object, str, int], deception.Generate]
# (description) -> Progress callback, e.g. a tqdm bar.
ProgressFactory = Callable[[str], deception.Progress | None]


def model_generator_factory(tokenizer, config: ml_collections.ConfigDict,
                            progress: ProgressFactory | None = None) -> GeneratorFactory:
    """Generators on our KV-cache decoder with the config's chat-template switch, system
    prompt and batch size; one progress bar per generation call."""
    def factory(model, label: str, max_new_tokens: int) -> deception.Generate:
        def generate(prompts, stop_texts=None):
            bar = progress(f"generating ({label})") if progress else None
            return deception.make_generator(
                model, tokenizer, max_new_tokens=max_new_tokens, chat=config.chat_template,
                system=config.system_prompt or None, batch_size=config.batch_size,
                progress=bar)(prompts, stop_texts=stop_texts)
        generate.stops_on_texts = True
        return generate
    return factory


def _deception_scenarios(config: ml_collections.ConfigDict, suite: str, label: str):
    n = config.num_scenarios
    if suite == "main":
        return deception.main_scenarios(
            n, scenarios_file=config.scenarios_file, seed=config.scenario_seed,
            answer_suffix=config.answer_suffix, self_control=config.self_control,
            honesty_prompt=config.honesty_baseline and label == "base")
    return deception.generalisation_scenarios_for(
        n, combinations_file=config.combinations_file, seed=config.generalisation_seed,
        answer_suffix=config.answer_suffix, wording=config.wording,
        perspectives=config.perspectives)


def _latent(config: ml_collections.ConfigDict, models: dict, tokenizer) -> dict:
    lc = config.latent
    pairs = latent_soo_pairs(trailing_ellipsis=lc.trailing_ellipsis)
    out = {}
    for label, model in models.items():
        out[label] = latent.latent_soo(
            model, tokenizer, pairs, sites=parse_csv(lc.sites), layers=parse_layers(lc.layers),
            chat_template=lc.chat_template, soo_site=lc.soo_site,
            soo_layer=resolve_soo_layer(lc.soo_layer, model.config.num_layers),
            soo_pooling=lc.soo_pooling, batch_size=lc.batch_size)
    if "tuned" in out:
        out["comparison"] = latent.compare_latent(out["base"], out["tuned"])
    return out


def _capability(config: ml_collections.ConfigDict, models: dict, generating: dict, tokenizer,
                generators: GeneratorFactory, out_dir: str | None, model_ids: dict,
                progress: ProgressFactory | None) -> dict:
    cc = config.capability
    records = load_general_prompt_records(parse_csv(cc.categories) or None)
    prompts = [r.prompt for r in records]
    out: dict = {}
    if cc.kl:
        if "tuned" in models:
            out["kl"] = capability.next_token_kl(
                models["base"], models["tuned"], tokenizer, prompts,
                chat_template=config.chat_template, batch_size=cc.batch_size)
        else:
            out["kl"] = {"skipped": "no fine-tuned model (adapter or checkpoint) to compare"}
    if cc.answers:
        answers = {label: generators(model, label, cc.answer_max_new_tokens)(prompts)
                   for label, model in generating.items()}
        out["answers"] = [{"id": r.id, "category": r.category, "prompt": r.prompt,
                           **{label: answers[label][i] for label in generating}}
                          for i, r in enumerate(records)]
    if cc.mtbench_questions:
        if out_dir is None:
            raise ValueError("MT-Bench answers need an output directory")
        out["mtbench"] = {}
        for label, model in generating.items():
            model_id = model_ids[label]
            answer_file = os.path.join(out_dir, "mt_bench", "model_answer", f"{model_id}.jsonl")
            bar = progress(f"MT-Bench ({label})") if progress else None
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


def run_suites(config: ml_collections.ConfigDict, tokenizer, *, base_model, tuned_model=None,
               generators: GeneratorFactory | None = None,
               progress: ProgressFactory | None = None, out_dir: str | None = None,
               model_ids: dict[str, str] | None = None,
               generate_for: tuple[str, ...] | None = None) -> tuple[dict, list[dict]]:
    """Run `config.suites` (an eval config, `default_eval_config()`); returns (results,
    per-response records). `results["deception"][label][condition]` is a `summarise`
    condition summary; labels are "base" and, with `tuned_model`, "tuned".

    `generate_for` limits the generation-based parts (deception suites, side-by-side answers,
    MT-Bench) to those labels, e.g. ("tuned",) when the base model's answers are already known;
    latent SOO and the KL retention still see both models."""
    suites = parse_suites(config.suites)
    models = {"base": base_model} | ({"tuned": tuned_model} if tuned_model is not None else {})
    generating = {label: m for label, m in models.items() if generate_for is None or label in generate_for}
    generators = generators or model_generator_factory(tokenizer, config, progress)
    model_ids = model_ids or {label: label for label in models}
    results: dict = {"suites": list(suites), "models": list(models), "timing_s": {}}
    records: list[dict] = []
    for suite in suites:
        start = time.perf_counter()
        if suite in ("main", "generalisation"):
            for label, model in generating.items():
                scenarios = _deception_scenarios(config, suite, label)
                summary, suite_records = deception.score_scenarios(
                    generators(model, label, config.max_new_tokens), scenarios,
                    swap_room_order_too=config.swap_room_order, whole_words=config.whole_words,
                    stop_when_decided=config.stop_when_decided)
                results.setdefault("deception", {}).setdefault(label, {}).update(summary)
                records += [{"model": label, "suite": suite, **r} for r in suite_records]
        elif suite == "latent":
            results["latent"] = _latent(config, models, tokenizer)
        elif suite == "capability":
            results["capability"] = _capability(config, models, generating, tokenizer, generators, out_dir,
                                                model_ids, progress)
        results["timing_s"][suite] = time.perf_counter() - start
    return results, records
