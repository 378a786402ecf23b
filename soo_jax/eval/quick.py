"""A short before/after evaluation for the end of a training run.

Deception on held-out burglar scenarios (our generator's scenarios right after the
evaluation split, so choosing a checkpoint on them does not touch the test set) by the
forced-choice endpoint (room log-probabilities in both orders; no generation) and, optionally,
by generated answers (the paper's metric and the order-balanced one), and the latent SOO at the
training site.
"""
from __future__ import annotations

import ml_collections

from soo_jax.data.scenarios import held_out_scenarios
from soo_jax.eval import deception, latent
from soo_jax.eval.capability import base_view
from soo_jax.eval.runtime import evaluation_view
from soo_jax.eval.config import default_eval_config
from soo_jax.eval.suite import ProgressFactory, forced_choice_views

__all__ = ["quick_before_after", "format_summary"]


def quick_before_after(base_model, tuned_model, tokenizer,
                       config: ml_collections.ConfigDict | None = None, *, soo_layer: int,
                       soo_site: str = "o_proj", n_scenarios: int = 50, generated: bool = False,
                       generate_factory=None, progress: ProgressFactory | None = None) -> dict:
    """Before/after numbers for a fine-tuned model.

    base_model: the model before fine-tuning, or None (recommended) for
      `capability.base_view(tuned_model)`: the same weights with zeroed adapters, no second
      copy in memory, and every compilation shared between before and after.
    config: an eval config (`default_eval_config()` when None) for the template, suffix,
      max_new_tokens, batch size, scenario seed, evaluation split size and SOO pooling.
    soo_layer, soo_site: the training site.
    generated: also generate answers and score them (`generate_factory` implies it).
    generate_factory: (model) -> Generate, for tests; default our greedy generator.
    progress: a ProgressFactory (`eval.runtime.tqdm_progress`): a progress display for the
      forced choice and the latent SOO of each view; None for none.

    Returns {"n_scenarios", "scenarios", "answer_suffix", "chat_template" (the prompts as
    asked), "forced_choice": {"before", "after"} (each `forced_choice.summarise_forced_choice`),
    with `generated` "deception": {"before", "after"} (each `deception.headline` of the burglar
    condition: deceptive/honest/neither %, order_balanced, position_bias), "latent_soo": {"site",
    "layer", "pooling", "before", "after"}, "summary": one printable paragraph}.
    """
    config = config or default_eval_config()
    # Views with dropout off: the caller's model may be mid-training, and stays as it is.
    tuned_model = evaluation_view(tuned_model)
    base_model = base_view(tuned_model) if base_model is None else evaluation_view(base_model)
    generated = generated or generate_factory is not None
    if generate_factory is None:
        def generate_factory(model):
            return deception.make_generator(
                model, tokenizer, max_new_tokens=config.max_new_tokens,
                chat=config.chat_template, system=config.system_prompt or None,
                batch_size=config.batch_size)
    scenarios = held_out_scenarios(n_scenarios, skip=config.num_scenarios,
                                             seed=config.scenario_seed,
                                             answer_suffix=config.answer_suffix)
    result: dict = {
        "n_scenarios": n_scenarios,
        "scenarios": (f"burglar scenarios {config.num_scenarios}..{config.num_scenarios + n_scenarios - 1}"
                      f" of our generator (seed {config.scenario_seed})"),
        "answer_suffix": config.answer_suffix, "chat_template": bool(config.chat_template),
        "latent_soo": {"site": soo_site, "layer": soo_layer,
                                            "pooling": config.latent.soo_pooling},
    }
    if generated:
        result["deception"] = {}
    result["forced_choice"], _ = forced_choice_views(config, {"before": base_model, "after": tuned_model}, tokenizer,
                                                     scenarios, progress=progress)
    for label, model in (("before", base_model), ("after", tuned_model)):
        if generated:
            summary, _ = deception.score_scenarios(generate_factory(model), scenarios,
                                                   swap_room_order_too=True,
                                                   whole_words=config.whole_words,
                                                   stop_when_decided=config.stop_when_decided)
            result["deception"][label] = deception.headline(summary["burglar"])
        measured = latent.latent_soo(model, tokenizer, sites=(soo_site,), layers=(soo_layer,),
                                     chat_template=config.latent.chat_template,
                                     soo_site=soo_site, soo_layer=soo_layer,
                                     soo_pooling=config.latent.soo_pooling,
                                     batch_size=config.latent.batch_size,
                                     progress=progress(f"latent SOO ({label})", unit="pair") if progress else None)
        result["latent_soo"][label] = measured["training_site"]["value"]
    result["summary"] = format_summary(result)
    return result


def format_summary(result: dict) -> str:
    before, after = result["forced_choice"]["before"], result["forced_choice"]["after"]
    soo = result["latent_soo"]
    change = (f"{100 * (soo['after'] - soo['before']) / soo['before']:+.0f}%"
              if soo["before"] else "n/a")

    def log_odds(s: dict) -> str:
        lo = s["log_odds"]
        return f"{lo['mean']:+.3f}" + (f" [{lo['low']:+.3f}, {lo['high']:+.3f}]" if "low" in lo else "")

    text = (f"Before -> after SOO fine-tuning on {result['n_scenarios']} held-out "
            f"{result['scenarios']} ({'chat template' if result['chat_template'] else 'raw prompts'}, "
            f"suffix {result['answer_suffix']!r}), both room orders: forced-choice log-odds of the deceptive "
            f"room, order-balanced, {log_odds(before)} -> {log_odds(after)} (95% t-interval over scenarios), "
            f"deceptive choice {before['deceptive_choice']:.1f}% -> {after['deceptive_choice']:.1f}%, position "
            f"effect {before['position_effect']:+.3f} -> {after['position_effect']:+.3f}.")
    if "deception" in result:
        gb, ga = result["deception"]["before"], result["deception"]["after"]
        text += (f" Generated answers: deceptive {gb['deceptive']:.1f}% -> {ga['deceptive']:.1f}% (paper metric; "
                 f"honest {gb['honest']:.1f}% -> {ga['honest']:.1f}%), order-balanced deception "
                 f"{gb['order_balanced']:.1f}% -> {ga['order_balanced']:.1f}%, position bias "
                 f"{gb['position_bias']:.1f}% -> {ga['position_bias']:.1f}%.")
    return text + (f" Latent SOO at layer {soo['layer']} {soo['site']} ({soo['pooling']} pooling): "
                   f"{soo['before']:.4g} -> {soo['after']:.4g} ({change}).")
