"""Figures for the RL results (PNG via matplotlib, headless)."""

from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from soo_jax.rl.metrics import threshold_grids  # noqa: E402

TITLES = {"deceptive": "Deceptive Baseline", "soo": "SOO Fine-Tuning", "honest": "Honest Baseline",
          "capability": "Capability-only control", "random": "Random + capability control"}


def count_contours(grids: Mapping[str, np.ndarray], conditions: Sequence[str], path, n_seeds: int,
                   *, normalised: bool = False, titles: Mapping[str, str] | None = None):
    """Seed-averaged deceptive-action counts over the threshold grid (the paper's Figure 3);
    `normalised`: grids of fractions of each seed's entries (metrics.normalised_count_grids)."""
    x, y = threshold_grids(next(iter(grids.values())).shape[-1])
    X, Y = np.meshgrid(x, y)
    vmax = max(float(np.nanmean(grids[c], 0).max()) for c in conditions)
    levels = np.linspace(0, max(vmax, 1e-9 if normalised else 1.0), 12)
    titles = {**TITLES, **(titles or {})}
    fig, axs = plt.subplots(1, len(conditions), figsize=(5.2 * len(conditions), 4.4), squeeze=False)
    for ax, cond in zip(axs[0], conditions):
        mean = np.nanmean(grids[cond], 0)
        cp = ax.contourf(X, Y, mean.T, levels=levels, cmap="viridis")
        ax.contour(X, Y, mean.T, levels=levels, colors="black", linewidths=0.4)
        ax.set_title(titles.get(cond, cond))
        ax.set_xlabel("projection on non-goal threshold")
    axs[0][0].set_ylabel("cosine goal/non-goal threshold")
    if normalised:
        fig.colorbar(cp, ax=axs[0].tolist(), shrink=0.9, label="fraction of the seed's entries (mean over seeds)")
        fig.suptitle(f"Deceptive actions given thresholds, as a fraction of all entries ({n_seeds} seeds)")
    else:
        fig.colorbar(cp, ax=axs[0].tolist(), shrink=0.9, label="deceptive actions (mean over seeds)")
        fig.suptitle(f"Average count of deceptive actions given thresholds ({n_seeds} seeds)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def difference_bars(differences: Mapping[str, dict], path):
    """Behavioural difference (MSE of count grids) as in the paper's Figure 4, but with the mean's
    95% t-interval over seeds (`metrics.behavioural_difference`) where the paper shows +- SD."""
    labels = list(differences)
    means = [differences[k]["mean"] for k in labels]
    intervals = [differences[k]["ci95"] for k in labels]
    errors = np.array([[m - lo for m, (lo, _) in zip(means, intervals)],
                       [hi - m for m, (_, hi) in zip(means, intervals)]])
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.2))
    pos = np.arange(len(labels))
    palette = {"SOO vs Honest": "green", "SOO vs Deceptive": "coral",
               "Honest vs Deceptive": "brown"}
    colors = [palette.get(k, "grey") for k in labels]
    ax.barh(pos, means, xerr=errors, color=colors, capsize=4)
    ax.set_yticks(pos, labels)
    ax.invert_yaxis()
    ax.set_xlabel("behavioural difference (MSE between count grids; mean [95% t-interval over seeds])")
    for p, m, (lo, hi) in zip(pos, means, intervals):
        ax.text(max(m, hi), p, f"  {m:.1f} [{lo:.1f}, {hi:.1f}]", va="center", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def effect_intervals(effects: Mapping[str, Mapping[str, dict]], endpoints: Mapping[str, str], path,
                     title: str):
    """One panel per endpoint: each row's mean paired effect with its 95% interval (dots: seeds).

    `effects[row][endpoint]` is a stats.paired_effect dict; `endpoints` maps names to labels.
    """
    rows = list(effects)
    fig, axs = plt.subplots(1, len(endpoints), figsize=(3.6 * len(endpoints), 0.45 * len(rows) + 1.6),
                            sharey=True, squeeze=False)
    pos = np.arange(len(rows))
    for ax, (name, label) in zip(axs[0], endpoints.items()):
        for p, row in zip(pos, rows):
            e = effects[row][name]
            lo, hi = e["ci95"]
            ax.plot([lo, hi], [p, p], color="C0", lw=2)
            ax.plot(e["mean"], p, "o", color="C0")
            ax.plot(e["per_seed"], np.full(len(e["per_seed"]), p), "|", color="grey", alpha=0.6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(label, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    axs[0][0].set_yticks(pos, rows)
    axs[0][0].invert_yaxis()
    fig.suptitle(title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def classification_curve(episode_counts, accuracy_mean, accuracy_per_seed, path, eval_seeds: int):
    """Deceptive vs honest classification accuracy by mean SOO; `eval_seeds`: evaluation seeds
    per training seed (the run's `evaluate.classification_eval_seeds`)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for acc in accuracy_per_seed:
        ax.plot(episode_counts, 100 * np.asarray(acc), color="grey", alpha=0.3, lw=0.8)
    ax.plot(episode_counts, 100 * np.asarray(accuracy_mean), marker="o", color="C0",
            label="mean over training seeds")
    ax.set_xlabel("evaluation episodes per seed")
    ax.set_ylabel("classification accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"Deceptive vs honest agent classification by mean SOO ({eval_seeds} eval seeds)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves(histories: Mapping[str, list[dict]], path):
    fig, axs = plt.subplots(1, 2, figsize=(12, 4))
    for stage, history in histories.items():
        if not history:
            continue
        eps = [h["episodes_done"] for h in history]
        axs[0].plot(eps, [h["return_blue"] for h in history], label=stage, lw=1)
        axs[1].plot(eps, [h["return_adversary"] for h in history], label=stage, lw=1)
    axs[0].set_title("blue agent: mean episode return (training, with exploration)")
    axs[1].set_title("adversary: mean episode return")
    for ax in axs:
        ax.set_xlabel("episode")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def save_all(out_dir: pathlib.Path, *, grids, differences, classification, histories, n_seeds):
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "counts": out_dir / "rl_deceptive_action_counts.png",
        "counts_controls": out_dir / "rl_deceptive_action_counts_controls.png",
        "differences": out_dir / "rl_behavioural_difference.png",
        "classification": out_dir / "rl_classification_accuracy.png",
        "training": out_dir / "rl_training_curves.png",
    }
    count_contours(grids, ["deceptive", "soo", "honest"], paths["counts"], n_seeds)
    controls = [c for c in ("capability", "random", "soo") if c in grids]
    count_contours(grids, controls, paths["counts_controls"], n_seeds)
    difference_bars(differences, paths["differences"])
    classification_curve(classification["episode_counts"], classification["accuracy_mean"],
                         classification["accuracy_per_training_seed"], paths["classification"],
                         classification["eval_seeds"])
    training_curves(histories, paths["training"])
    return {k: str(v) for k, v in paths.items()}
