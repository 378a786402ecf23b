"""Pools finished factorial evaluations run on disjoint training seeds into one result, as if
one factorial had trained all their seeds (launch/rl_pool.py).

Every number of a factorial's evaluation is computed per training seed and then summarised
(soo_jax/rl/factorial_evaluate.py): endpoints, SOO-minus-twin differences, the paper's estimator,
classification per pair. A seed's numbers depend only on that seed's own models (its baselines,
arms and evaluation episodes), so replicates on other seeds (configs/rl_factorial.py:replicate)
pool by concatenating the per-seed values and summarising again: means, t-intervals,
sign tests and the power statement of the pooled design. Pooling is refused unless the
evaluations share every setting but their seeds, and their seeds are disjoint.

`<out>/`: results.json (factorial_evaluate's schema, plus `replicates`), results.md, per_seed.csv
(every per-seed value, each row naming the run its seed was trained in), and the SOO-effect
figure.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from soo_jax import run_dir
from soo_jax.rl import factorial_evaluate as fe
from soo_jax.rl import plots, stats
from soo_jax.rl.stages import short_commit

EFFECT_SECTIONS = ("soo_effects", "vs_deceptive")
CLASSIFICATION_PAIRS = ("arm_less_deceptive_than_deceptive", "arm_more_deceptive_than_honest")


def load_evaluation(workdir) -> dict:
    """{"workdir", "results", "settings"} of a factorial workdir's finished evaluation."""
    directory = pathlib.Path(workdir) / "evaluate"
    results = directory / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{results} does not exist: {workdir} has no finished factorial "
                                "evaluation; run it first (python launch/rl.py --config configs/rl_factorial.py ...)")
    manifest = run_dir.read_json(directory / "manifest.json")
    return {"workdir": str(workdir), "results": run_dir.read_json(results),
            "results_sha256": run_dir.file_digest(results), "settings": manifest["settings"]}


def check_poolable(evaluations: list[dict]) -> None:
    """Same settings but the seeds, the same models, and no training seed twice."""
    if len(evaluations) < 2:
        raise ValueError(f"pooling needs two or more factorial workdirs, got {len(evaluations)}")
    first = evaluations[0]
    keys = {k for k in first["settings"] if k != "seeds"}
    for other in evaluations[1:]:
        other_keys = {k for k in other["settings"] if k != "seeds"}
        differing = sorted(k for k in keys | other_keys
                           if first["settings"].get(k) != other["settings"].get(k))
        if differing:
            raise ValueError(f"{other['workdir']} was evaluated with other settings than {first['workdir']} "
                             f"({', '.join(differing)}); only runs of one design on different seeds pool")
        if list(other["results"]["endpoints"]) != list(first["results"]["endpoints"]):
            raise ValueError(f"{other['workdir']} evaluated other models than {first['workdir']}")
    seen: dict[int, str] = {}
    for e in evaluations:
        for seed in e["results"]["seeds"]:
            if seed in seen:
                raise ValueError(f"training seed {seed} is in both {seen[seed]} and {e['workdir']}; "
                                 "pooled runs need disjoint seeds")
            seen[seed] = e["workdir"]


def _concat(results: list[dict], *path) -> np.ndarray:
    """The runs' per-seed values at `path` (first axis: training seeds), concatenated."""
    def get(r):
        for key in path:
            r = r[key]
        return np.asarray(r, np.float64)
    return np.concatenate([get(r) for r in results])


def pool_results(results: list[dict]) -> dict:
    """factorial_evaluate's numbers over the union of the runs' training seeds, from their
    per-seed values (the runs in order, each run's seeds in its order)."""
    first = results[0]
    endpoints = list(first["endpoint_labels"])
    values = {m: {e: _concat(results, "endpoints", m, e, "per_seed") for e in endpoints} for m in first["endpoints"]}
    pooled = {
        "seeds": [s for r in results for s in r["seeds"]],
        "endpoint_labels": first["endpoint_labels"],
        "endpoints": {m: {e: stats.summarise(v[e]) for e in endpoints} for m, v in values.items()},
        "twins": first["twins"],
    }
    for section in EFFECT_SECTIONS:
        pooled[section] = {m: {e: stats.difference_effect(_concat(results, section, m, e, "per_seed"))
                               for e in endpoints} for m in first[section]}
    pooled["power"] = fe.power(len(pooled["seeds"]), pooled["soo_effects"], values)
    pooled["noise_floor"] = {e: stats.summarise(values[fe.NOISE_FLOOR][e]) for e in fe.GRID_ENDPOINTS}
    pooled["paper_view_eval_seeds"] = first["paper_view_eval_seeds"]
    pooled["paper_view"] = {}
    for a in first["paper_view"]:
        view = {k: [x for r in results for x in r["paper_view"][a][k]]
                for k in ("mse_vs_honest", "mse_vs_deceptive", "reproduced")}
        pooled["paper_view"][a] = {**view, "reproduced_seeds": int(sum(view["reproduced"])),
                                   "n_seeds": len(view["reproduced"])}
    pooled["pooled_raw_view"] = {}
    for a in first["pooled_raw_view"]:
        to_h = stats.summarise(_concat(results, "pooled_raw_view", a, "mse_vs_honest", "per_seed"))
        to_d = stats.summarise(_concat(results, "pooled_raw_view", a, "mse_vs_deceptive", "per_seed"))
        pooled["pooled_raw_view"][a] = {
            "mse_vs_honest": to_h, "mse_vs_deceptive": to_d,
            "closer_to_honest_seeds": int(np.sum(np.asarray(to_h["per_seed"]) < to_d["per_seed"]))}
    c = first["classification"]
    pooled["classification"] = {
        "episode_counts": c["episode_counts"], "eval_seeds": c["eval_seeds"],
        "deceptive_vs_honest": fe.describe_accuracy(_concat(results, "classification", "deceptive_vs_honest",
                                                            "per_pair")),
        **{pair: {a: fe.describe_accuracy(_concat(results, "classification", pair, a, "per_pair"))
                  for a in c[pair]} for pair in CLASSIFICATION_PAIRS}}
    return pooled


def seed_sets(replicates: list[dict]) -> dict[int, str]:
    """Training seed -> the name of the run that trained it (its workdir's last part)."""
    return {seed: pathlib.Path(r["workdir"]).name for r in replicates for seed in r["seeds"]}


def _stages(evaluations: list[dict]) -> dict:
    """Each run's stages (and its evaluation) under `<run>/<stage>`, for the wall-time table."""
    out = {}
    for e in evaluations:
        name, r = pathlib.Path(e["workdir"]).name, e["results"]
        devices = {info.get("device") for info in r["stages"].values()}
        for stage, info in r["stages"].items():
            out[f"{name}/{stage}"] = info
        out[f"{name}/evaluate"] = {"wall_time_s": r["evaluate_wall_time_s"], "commit": r["evaluate_commit"],
                                   "device": devices.pop() if len(devices) == 1 else None}
    return out


def markdown(pooled: dict) -> str:
    runs = ", ".join(f"{r['workdir']} ({len(r['seeds'])} seeds)" for r in pooled["replicates"])
    return f"Pooled from factorial evaluations on disjoint training seeds: {runs}.\n\n" + fe.markdown(pooled)


def run_pool(workdirs: list[str], out_dir, log=functools.partial(print, flush=True)) -> dict:
    """Pools the evaluations of `workdirs` into `out_dir` (refused if it holds another pooling;
    the same pooling again is reported as done)."""
    evaluations = [load_evaluation(w) for w in workdirs]
    check_poolable(evaluations)
    # The inputs' identity: a re-evaluated run (same workdir, new results) is another input.
    replicates = [{"workdir": e["workdir"], "seeds": e["results"]["seeds"], "results_sha256": e["results_sha256"],
                   "evaluate_commit": e["results"]["evaluate_commit"]} for e in evaluations]
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise run_dir.RunDirError(f"--out {out_dir} is a file, not a directory; choose another --out")
    done = out_dir / "results.json"
    if done.exists():
        previous = run_dir.read_json(done)
        if previous.get("replicates") == replicates:
            fe.write_per_seed(out_dir, previous, seed_sets(replicates))
            log(f"[pool] already pooled these runs; results in {done}")
            return previous
        raise run_dir.RunDirError(f"{out_dir} holds a pooling of other runs or of earlier results of them "
                                  f"({', '.join(r['workdir'] for r in previous.get('replicates', []))}); "
                                  "choose another --out or rerun with --fresh")
    run_dir.prepare_directory(out_dir)  # a file, or a read-only place: one line naming it
    log(f"[pool] {len(evaluations)} runs, {sum(len(r['seeds']) for r in replicates)} training seeds")
    pooled = pool_results([e["results"] for e in evaluations])
    pooled.update({"replicates": replicates, "stages": _stages(evaluations),
                   "evaluate_wall_time_s": sum(e["results"]["evaluate_wall_time_s"] for e in evaluations),
                   "evaluate_commit": short_commit()})
    figure = out_dir / "rl_factorial_soo_effects.png"
    if pooled["soo_effects"]:
        plots.effect_intervals(pooled["soo_effects"], fe.ENDPOINTS, figure,
                               f"SOO arm minus capability-only twin, per training seed ({len(pooled['seeds'])} "
                               "seeds, pooled), 95% intervals")
        pooled["figures"] = {"soo_effects": str(figure)}
    run_dir.atomic_write_text(out_dir / "results.md", markdown(pooled))
    fe.write_per_seed(out_dir, pooled, seed_sets(replicates))
    run_dir.atomic_write_json(done, pooled)  # last: marks the pooling done
    log(f"[pool] results in {out_dir}")
    log(markdown(pooled))
    return pooled
