"""The RL figures say what the run used."""
import matplotlib.figure
import numpy as np

from soo_jax.rl import plots

HISTORY = {"episodes_done": 1, "return_blue": 0.0, "return_adversary": 0.0}


def test_classification_title_counts_the_configured_eval_seeds(tmp_path, monkeypatch):
    titles = {}
    save = matplotlib.figure.Figure.savefig

    def recording_savefig(fig, path, *args, **kwargs):
        titles[str(path)] = [ax.get_title() for ax in fig.axes]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
    grids = {c: np.ones((2, 4, 4)) for c in ("deceptive", "soo", "honest")}
    classification = {"episode_counts": [10, 20], "accuracy_mean": [0.5, 1.0],
                      "accuracy_per_training_seed": [[0.5, 1.0], [0.5, 1.0]], "eval_seeds": 3}
    paths = plots.save_all(tmp_path, grids=grids, differences={"SOO vs Honest": {"mean": 1.0, "ci95": [0.2, 1.8]}},
                           classification=classification, histories={"soo": [HISTORY]}, n_seeds=2)
    title = titles[paths["classification"]][0]
    assert "(3 eval seeds)" in title and "10" not in title
    assert (tmp_path / "rl_classification_accuracy.png").read_bytes()[:4] == b"\x89PNG"
