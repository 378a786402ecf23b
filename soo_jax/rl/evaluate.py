"""Evaluation stage: deceptive-action grids, behavioural differences, SOO classification,
figures, results.json, results.md and per_seed.csv (every per-seed value, `per_seed_rows`)
under `<workdir>/evaluate/`."""

from __future__ import annotations

import functools
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from soo_jax.rl import config as config_lib
from soo_jax.rl import metrics, plots, stats
from soo_jax.rl.checkpoints import StageCheckpoints
from soo_jax.rl.rollouts import make_evaluator
from soo_jax.rl.stages import claim_stage, format_duration, load_agents, short_commit, stage_dir
from soo_jax.run_dir import atomic_write_json, atomic_write_text, per_seed_csv, read_json

CONDITIONS = ("deceptive", "soo", "honest", "capability", "random")
PAIRS = (("soo", "honest"), ("soo", "deceptive"), ("honest", "deceptive"),
         ("capability", "honest"), ("capability", "deceptive"),
         ("random", "honest"), ("random", "deceptive"))
SHORT_NAMES = {"soo": "SOO", "honest": "Honest", "deceptive": "Deceptive",
               "capability": "Capability-only", "random": "Random+capability"}
THRESHOLD_STREAM, CLASSIFICATION_STREAM = 1000, 2000
# Independent episodes for the same policy: the factorial's noise floor of its grid endpoints.
THRESHOLD_REPEAT_STREAM = 3000


def _episode_keys(seeds, stream: int, n_episodes: int, sub: int = 0) -> jax.Array:
    return jnp.stack([
        jax.random.split(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(s), stream),
                                            sub), n_episodes)
        for s in seeds
    ])


def _evaluate(evaluator, agents, keys, batch: int, params) -> dict:
    """Runs `keys` (seeds, episodes) through the evaluator in episode batches; host arrays."""
    parts = []
    for start in range(0, keys.shape[1], batch):
        out = evaluator(agents, keys[:, start : start + batch], params)
        parts.append(jax.tree.map(np.asarray, out))
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *parts)


def threshold_rollouts(config, agents, stream: int = THRESHOLD_STREAM) -> dict:
    """Deterministic episodes for the threshold grids, the same episode keys for every model
    (`stream` picks another set of episodes): host arrays (seeds, threshold_episodes, ...), see
    `make_evaluator`."""
    e = config.evaluate
    evaluator = make_evaluator(config_lib.maddpg_hyper(config), e.classification_sight_radius)
    keys = _episode_keys(config.seeds, stream, e.threshold_episodes)
    return _evaluate(evaluator, agents, keys, e.episode_batch, config_lib.env_params(config, "deceptive"))


def classification_rollouts(config, agents) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode sums and counts of the SOO value over self observations, each (training
    seeds, classification_eval_seeds, max episode count); the same keys for every model."""
    e = config.evaluate
    n_eval, n_eps = e.classification_eval_seeds, max(e.classification_episode_counts)
    evaluator = make_evaluator(config_lib.maddpg_hyper(config), e.classification_sight_radius)
    # keys: (training seeds, eval seeds * episodes); the same eval keys for every model.
    keys = jnp.concatenate([_episode_keys(config.seeds, CLASSIFICATION_STREAM, n_eps, sub=k)
                            for k in range(n_eval)], axis=1)
    out = _evaluate(evaluator, agents, keys, e.episode_batch, config_lib.env_params(config, "deceptive"))
    shape = (len(config.seeds), n_eval, n_eps)
    return out["soo_sum"].reshape(shape), out["soo_count"].reshape(shape)


def threshold_evaluation(config, agents_by_condition, log) -> tuple[dict, dict]:
    entries, summary = {}, {}
    for cond, agents in agents_by_condition.items():
        out = threshold_rollouts(config, agents)
        entries[cond] = [
            metrics.deceptive_entries(out["entry_valid"][s], out["entry_proj_nongoal"][s],
                                      out["entry_cos_goal_nongoal"][s],
                                      out["entry_adversary_visible"][s])
            for s in range(len(config.seeds))
        ]
        summary[cond] = {
            "return_adversary": stats.summarise(out["return"][..., 0].mean(axis=1)),
            "return_blue_deceptive_reward": stats.summarise(out["return"][..., 1].mean(axis=1)),
            "trap_rate": stats.summarise(out["trapped"].mean(axis=1)),
            "deceptive_entries": stats.summarise([len(x) for x in entries[cond]]),
        }
        log(f"[evaluate] {cond}: trap rate {summary[cond]['trap_rate']['mean']:.3f}, deceptive entries "
            f"per seed {[int(n) for n in summary[cond]['deceptive_entries']['per_seed']]}")
    return entries, summary


def classification_evaluation(config, agents_by_condition, log) -> dict:
    """Per training seed: deceptive vs honest (and SOO fine-tuned vs deceptive) by mean SOO."""
    counts = list(config.evaluate.classification_episode_counts)
    n_eval = config.evaluate.classification_eval_seeds
    soo = {}
    for cond in ("deceptive", "honest", "soo"):
        if cond not in agents_by_condition:
            continue
        soo[cond] = classification_rollouts(config, agents_by_condition[cond])
        log(f"[evaluate] classification rollouts done for {cond}")

    def accuracy(honest_like: str):
        return np.stack([
            metrics.classification_accuracy(soo["deceptive"][0][s], soo["deceptive"][1][s],
                                            soo[honest_like][0][s], soo[honest_like][1][s], counts)
            for s in range(len(config.seeds))
        ])

    def mean_soo(cond):
        total, count = soo[cond][0].sum(axis=(1, 2)), soo[cond][1].sum(axis=(1, 2))
        return (total / np.maximum(count, 1)).tolist()

    per_seed = accuracy("honest")
    result = {
        "episode_counts": counts,
        "eval_seeds": n_eval,
        "accuracy_per_training_seed": per_seed.tolist(),
        "accuracy_mean": per_seed.mean(axis=0).tolist(),
        "mean_soo_per_training_seed": {c: mean_soo(c) for c in soo},
    }
    if "soo" in soo:
        soo_vs_dec = accuracy("soo")
        result["soo_finetuned_vs_deceptive_accuracy_per_training_seed"] = soo_vs_dec.tolist()
        result["soo_finetuned_vs_deceptive_accuracy_mean"] = soo_vs_dec.mean(axis=0).tolist()
    return result


def per_seed_rows(results: dict, set_name: str) -> list[dict]:
    """Every per-seed value of `results` as rows of run_dir.PER_SEED_COLUMNS (set = `set_name`,
    condition empty). Per condition: `trap_rate`, `deceptive_entries`, `return_adversary`,
    `return_blue_deceptive_reward`, `mean_soo` (classified conditions); per pair (a, b), on a's
    rows: `behavioural_difference_vs_<b>`; `classified_at_<n>` (the fraction of evaluation seeds
    in which the model's mean SOO over n episodes is below the deceptive baseline's) on the
    honest baseline's rows and the SOO fine-tuned agent's."""
    seeds = results["seeds"]
    rows = []

    def add(model, quantity, values):
        if len(values) != len(seeds):
            raise ValueError(f"{model} {quantity}: {len(values)} values for {len(seeds)} seeds")
        rows.extend({"set": set_name, "condition": "", "model": model, "seed": seed,
                     "quantity": quantity, "value": float(v)} for seed, v in zip(seeds, values))

    for cond, summary in results["conditions"].items():
        for quantity in ("trap_rate", "deceptive_entries", "return_adversary", "return_blue_deceptive_reward"):
            add(cond, quantity, summary[quantity]["per_seed"])
    for a, b in PAIRS:
        add(a, f"behavioural_difference_vs_{b}",
            results["behavioural_difference"][f"{SHORT_NAMES[a]} vs {SHORT_NAMES[b]}"]["per_seed"])
    c = results["classification"]
    for cond, values in c["mean_soo_per_training_seed"].items():
        add(cond, "mean_soo", values)
    for model, key in (("honest", "accuracy_per_training_seed"),
                       ("soo", "soo_finetuned_vs_deceptive_accuracy_per_training_seed")):
        if key in c:
            for i, n in enumerate(c["episode_counts"]):
                add(model, f"classified_at_{n}", [per_seed[i] for per_seed in c[key]])
    return rows


def _markdown(results: dict) -> str:
    lines = [f"Training seeds: {len(results['seeds'])}. Each cell with an interval: mean over training seeds "
             "[95% t-interval over seeds, ddof 1].", "",
             "| comparison | behavioural difference |", "|---|---|"]
    for name, d in results["behavioural_difference"].items():
        lines.append(f"| {name} | {stats.format_interval(d, '{:.1f}')} |")
    closer = results["soo_closer_to_honest_seeds"]
    lines += ["", f"SOO fine-tuned agent closer to the honest than to the deceptive baseline in "
              f"{closer[0]}/{closer[1]} seeds.", "",
              "| condition | trap rate (eval) | adversary return | blue return (deceptive reward) |"
              " deceptive entries per seed |", "|---|---|---|---|---|"]
    for cond, s in results["conditions"].items():
        cells = [stats.format_interval(s[quantity], fmt) for quantity, fmt in
                 (("trap_rate", "{:.3f}"), ("return_adversary", "{:.2f}"),
                  ("return_blue_deceptive_reward", "{:.2f}"), ("deceptive_entries", "{:.1f}"))]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    c = results["classification"]
    lines += ["", "| evaluation episodes per seed | " + " | ".join(map(str, c["episode_counts"]))
              + " |", "|---" * (len(c["episode_counts"]) + 1) + "|",
              "| deceptive vs honest accuracy (mean over training seeds) | "
              + " | ".join(f"{100 * a:.0f}%" for a in c["accuracy_mean"]) + " |"]
    if "soo_finetuned_vs_deceptive_accuracy_mean" in c:
        lines.append("| SOO fine-tuned classified as less deceptive than deceptive | "
                     + " | ".join(f"{100 * a:.0f}%"
                                  for a in c["soo_finetuned_vs_deceptive_accuracy_mean"]) + " |")
    lines += ["", "| stage | wall time | device | commit |", "|---|---|---|---|"]
    for stage, info in results["stages"].items():
        lines.append(f"| {stage} | {format_duration(info['wall_time_s'])} | {info['device']} | "
                     f"{info['commit']} |")
    return "\n".join(lines) + "\n"


def claim_evaluation(config: ConfigDict, log) -> tuple[pathlib.Path, dict | None]:
    """(the evaluation stage's directory, its stored results if it finished with these settings)."""
    out_dir = claim_stage(config, "evaluate")
    done = out_dir / "results.json"
    if done.exists():
        log(f"[evaluate] already finished; results in {done}")
        return out_dir, read_json(done)
    return out_dir, None


def run_evaluation_stage(config: ConfigDict, log=functools.partial(print, flush=True)) -> dict:
    out_dir, finished = claim_evaluation(config, log)
    set_name = pathlib.Path(config.workdir).name
    if finished is not None:
        if not (out_dir / "per_seed.csv").exists():
            atomic_write_text(out_dir / "per_seed.csv", per_seed_csv(per_seed_rows(finished, set_name)))
        return finished
    done = out_dir / "results.json"
    start = time.time()
    stages = {}
    agents = {}
    for cond in CONDITIONS:
        ckpt = StageCheckpoints(stage_dir(config, cond))
        if not ckpt.is_done():
            raise FileNotFoundError(
                f"[evaluate] stage {cond!r} has no finished result under {ckpt.dir}; run it "
                f"first (--config.stage={cond})")
        agents[cond] = load_agents(config, cond)
        stages[cond] = ckpt.done_info()
    entries, summary = threshold_evaluation(config, agents, log)
    grids = metrics.per_seed_count_grids(entries, config.evaluate.grid_size)
    differences = {f"{SHORT_NAMES[a]} vs {SHORT_NAMES[b]}":
                   metrics.behavioural_difference(grids[a], grids[b]) for a, b in PAIRS}
    soo_h = np.asarray(differences["SOO vs Honest"]["per_seed"])
    soo_d = np.asarray(differences["SOO vs Deceptive"]["per_seed"])
    classification = classification_evaluation(config, agents, log)
    histories = {c: json.loads((stage_dir(config, c) / "history.json").read_text())
                 for c in CONDITIONS}
    figures = plots.save_all(out_dir, grids=grids, differences=differences,
                             classification=classification, histories=histories,
                             n_seeds=len(config.seeds))
    np.savez_compressed(out_dir / "count_grids.npz", **grids)
    results = {
        "seeds": list(config.seeds),
        "conditions": summary,
        "behavioural_difference": differences,
        "soo_closer_to_honest_seeds": [int(np.sum(soo_h < soo_d)), len(soo_h)],
        "classification": classification,
        "stages": stages,
        "evaluate_wall_time_s": time.time() - start,
        "evaluate_commit": short_commit(),
        "figures": figures,
    }
    (out_dir / "results.md").write_text(_markdown(results))
    atomic_write_text(out_dir / "per_seed.csv", per_seed_csv(per_seed_rows(results, set_name)))
    atomic_write_json(done, results)  # last: marks the stage finished
    log(f"[evaluate] done in {format_duration(time.time() - start)}; results in {out_dir}")
    log(_markdown(results))
    return results
