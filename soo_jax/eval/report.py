"""Writing evaluation results: JSON, a Markdown report, bar plots (PNG), response records.

The plot uses matplotlib's object API with the Agg canvas directly, so nothing here touches
pyplot's global backend state.
"""
from __future__ import annotations

import json
import math
import os
import pathlib

from soo_jax.eval.deception import headline, ordered_conditions
from soo_jax.eval.forced_choice import format_forced_choice
from soo_jax.run_dir import atomic_write_text

__all__ = ["write_json", "write_jsonl", "markdown_report", "plot_deception_rates",
           "write_report", "deception_summary", "forced_choice_summary", "latent_summary", "capability_summary"]


def write_json(obj, path: str | os.PathLike) -> None:
    atomic_write_text(pathlib.Path(path), (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def write_jsonl(rows, path: str | os.PathLike) -> None:
    atomic_write_text(pathlib.Path(path), "".join(json.dumps(r) + "\n" for r in rows).encode())


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _deception_table(deception: dict) -> list[str]:
    lines = ["| model | condition | n | deceptive % | honest % | neither % | "
             "order-balanced deceptive % | position bias % |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    perspectives = []
    for label, conditions in deception.items():
        for name in ordered_conditions(conditions):
            h = headline(conditions[name])
            if "correct" in h:
                perspectives.append((label, name, h))
                continue
            lines.append(f"| {label} | {name} | {h['n']} | {_pct(h['deceptive'])} | "
                         f"{_pct(h['honest'])} | {_pct(h['neither'])} | "
                         f"{_pct(h['order_balanced'])} | {_pct(h['position_bias'])} |")
    if perspectives:
        lines += ["", "Perspectives (correct = Bob's room, projected = one's own room):", "",
                  "| model | condition | n | correct % | projected % | neither % | "
                  "order-balanced correct % | position bias % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, name, h in perspectives:
            lines.append(f"| {label} | {name} | {h['n']} | {_pct(h['correct'])} | "
                         f"{_pct(h['projected'])} | {_pct(h['neither'])} | "
                         f"{_pct(h['order_balanced'])} | {_pct(h['position_bias'])} |")
    return lines


def _latent_table(latent: dict) -> list[str]:
    lines = ["| model | latent SOO (all modules) | attention | MLP | LM head | training site |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, result in latent.items():
        if label == "comparison":
            continue
        groups, site = result["groups"], result["training_site"]
        cells = [f"{groups[g]:.6g}" if g in groups else "–" for g in ("attention", "mlp", "lm_head")]
        lines.append(f"| {label} | {result['score']:.6g} | {' | '.join(cells)} | "
                     f"{site['value']:.6g} (layer {site['layer']} {site['site']}, "
                     f"{site['pooling']}) |")
    first = next(r for k, r in latent.items() if k != "comparison")
    lines += ["", f"{first['num_pairs']} pairs, {first['num_modules']} modules; "
              f"{first['unequal_length_pairs']} pairs differ in token length. "
              f"Alignment: {first['alignment']}."]
    return lines


def deception_summary(conditions: dict) -> str:
    """One line for one model's conditions: "burglar 84.0% deceptive (55.8% order-balanced);
    ..." (Perspectives: % correct)."""
    parts = []
    for name in ordered_conditions(conditions):
        h = headline(conditions[name])
        rate, what = (h["correct"], "correct") if "correct" in h else (h["deceptive"], "deceptive")
        balanced = f" ({_pct(h['order_balanced'])}% order-balanced)" if h["order_balanced"] is not None else ""
        parts.append(f"{name} {_pct(rate)}% {what}{balanced}")
    return "; ".join(parts)


def forced_choice_summary(forced_choice: dict) -> str:
    """One line per model view: "base: forced choice on 250 scenarios x 2 orders: ..."."""
    return "; ".join(f"{label}: {format_forced_choice(summary)}" for label, summary in forced_choice.items())


def _forced_choice_table(forced_choice: dict) -> list[str]:
    lines = ["| model | n | order-balanced log-odds, deceptive - honest [95% t-interval over scenarios] | "
             "deceptive choice % (order-balanced) | original order % | swapped order % | "
             "position effect (log-odds, original - swapped) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for label, s in forced_choice.items():
        lo = s["log_odds"]
        interval = f" [{lo['low']:+.3f}, {lo['high']:+.3f}]" if "low" in lo else ""
        lines.append(f"| {label} | {s['n_scenarios']} | {lo['mean']:+.3f}{interval} | {_pct(s['deceptive_choice'])} | "
                     f"{_pct(s['deceptive_choice_original'])} | {_pct(s['deceptive_choice_swapped'])} | "
                     f"{s['position_effect']:+.3f} |")
    return lines


def latent_summary(latent: dict) -> str:
    """"base 0.7208 (training site 0.1549); tuned 0.446 (training site 0.00126); change -0.275"."""
    parts = [f"{label} {result['score']:.4g} (training site {result['training_site']['value']:.4g})"
             for label, result in latent.items() if label != "comparison"]
    if "comparison" in latent:
        parts.append(f"change {latent['comparison']['change']['score']:+.4g}")
    return "; ".join(parts)


def capability_summary(capability: dict) -> str:
    """The KL, how many side-by-side answers, and the MT-Bench answers written, in one line."""
    parts = []
    kl = capability.get("kl")
    if kl:
        parts.append(f"KL skipped ({kl['skipped']})" if "skipped" in kl else
                     f"KL(base || tuned) {kl['mean_kl_base_tuned']:.4g} nats")
    if "answers" in capability:
        parts.append(f"{len(capability['answers'])} greedy answers per model")
    for label, info in capability.get("mtbench", {}).items():
        parts.append(f"MT-Bench ({label}): {info['answered_now']} answered now, in {info['answer_file']}")
    return "; ".join(parts) or "nothing selected"


def markdown_report(results: dict) -> str:
    meta = results.get("meta", {})
    lines = ["# SOO evaluation", ""]
    for key in ("model", "adapter", "checkpoint", "created"):
        if meta.get(key):
            lines.append(f"- {key}: `{meta[key]}`")
    if meta:
        lines.append("")
    if "forced_choice" in results:
        lines += ["## Forced choice (room log-probabilities)", "",
                  "Each scenario in both room orders, the reply started with the answer prefix; log-odds = "
                  "log p(deceptive room) - log p(honest room), averaged over the two orders per scenario. "
                  "Per-prompt values: forced_choice.jsonl.", ""]
        lines += _forced_choice_table(results["forced_choice"]) + [""]
    if "deception" in results:
        lines += ["## Deception (first-mentioned room)", "",
                  "Paper metric: % of scenarios whose response names the deceptive room first. "
                  "Order-balanced: mean of that rate over the published room order and the "
                  "swapped order; position bias: % of scenarios where the response names the "
                  "first-listed room in both orders.", ""]
        lines += _deception_table(results["deception"]) + [""]
    if "latent" in results:
        lines += ["## Latent SOO (mean MSE self vs other; lower = more overlap)", ""]
        lines += _latent_table(results["latent"]) + [""]
    capability = results.get("capability", {})
    kl = capability.get("kl")
    if kl:
        lines += ["## Capability retention", ""]
        if "skipped" in kl:
            lines.append(f"KL: skipped ({kl['skipped']}).")
        else:
            lines.append(f"Mean next-token KL(base || tuned) = {kl['mean_kl_base_tuned']:.6g} "
                         f"nats, KL(tuned || base) = {kl['mean_kl_tuned_base']:.6g} nats over "
                         f"{len(kl['per_prompt'])} general prompts ({kl['positions']}).")
        lines.append("")
    if "mtbench" in capability:
        for label, info in capability["mtbench"].items():
            lines.append(f"- MT-Bench answers ({label}): `{info['answer_file']}` "
                         f"(model_id `{info['model_id']}`)")
        lines.append("")
    return "\n".join(lines)


def plot_deception_rates(deception: dict, path: str | os.PathLike) -> None:
    """Grouped bars per condition: for each model the paper's rate and the order-balanced
    rate (Perspectives: accuracy). One PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conditions = ordered_conditions({name for c in deception.values() for name in c})
    series = []
    for label, by_condition in deception.items():
        for metric, title in (("paper", "paper metric"), ("order_balanced", "order-balanced")):
            values = []
            for name in conditions:
                h = headline(by_condition[name]) if name in by_condition else None
                key = None if h is None else ("correct" if "correct" in h else "deceptive")
                value = None if h is None else (h[key] if metric == "paper" else h["order_balanced"])
                values.append(math.nan if value is None else value)
            if not all(math.isnan(v) for v in values):
                series.append((f"{label}, {title}", values))

    fig = Figure(figsize=(max(6.0, 0.9 * len(conditions) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(conditions))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels(conditions, rotation=35, ha="right")
    ax.set_ylabel("% of scenarios (deceptive; Perspectives: correct)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.legend(fontsize="small")
    ax.set_title("Deception rate per condition")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def write_report(results: dict, records: list[dict], out_dir: str | os.PathLike) -> dict[str, str]:
    """results.json, results.md, deception_rates.png (if any deception suite ran),
    responses.jsonl (generated answers) and forced_choice.jsonl (the forced-choice suite's
    log-probabilities) into `out_dir`; returns {kind: path}."""
    out = pathlib.Path(out_dir)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    write_json(results, paths["json"])
    atomic_write_text(paths["markdown"], markdown_report(results).encode())
    if results.get("deception"):
        paths["plot"] = out / "deception_rates.png"
        plot_deception_rates(results["deception"], paths["plot"])
    choices = [{k: v for k, v in r.items() if k != "suite"} for r in records if r.get("suite") == "forced_choice"]
    responses = [r for r in records if r.get("suite") != "forced_choice"]
    if responses:
        paths["responses"] = out / "responses.jsonl"
        write_jsonl(responses, paths["responses"])
    if choices:
        paths["forced_choice"] = out / "forced_choice.jsonl"
        write_jsonl(choices, paths["forced_choice"])
    return {k: str(v) for k, v in paths.items()}
