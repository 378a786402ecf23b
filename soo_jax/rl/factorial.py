"""The factorial fine-tuning experiment (configs/rl_factorial.py): which of the choices the
authors never released moves the blue agent's behaviour, and by more than its control?

Layout. Each arm is a training stage of its own, `<workdir>/<arm>/` (manifest, checkpoints,
history; resumable and skipped when finished, exactly as configs/rl_deception.py's stages), run
by `training.run_training_stage`. The two 40,000-episode baselines are configs/rl_deception.py's,
read from `<baseline_workdir>/{deceptive,honest}/`: a finished one is checked against the
settings this config needs from it (seeds, env, maddpg, chunking, baseline; never a fine-tuning
key) without writing anything there, and used as is; a missing one is trained there, under that
workdir's lock, as configs/rl_deception.py would. The evaluation is `<workdir>/evaluate/`
(soo_jax/rl/factorial_evaluate.py).

Order: the deceptive baseline, then the arms (each capability-only twin right before the SOO
arms paired with it, so a partial run holds complete pairs), then the honest baseline (only the
evaluation needs it), then the evaluation.
"""

from __future__ import annotations

import functools
import pathlib

from ml_collections import ConfigDict

from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl import factorial_evaluate, stages, training


def ensure_baseline(config: ConfigDict, stage: str, log) -> dict | None:
    """A finished baseline is checked (read-only) and reused; a missing one is trained in the
    baseline workdir. Returns the baseline's done.json."""
    directory = stages.stage_dir(config, stage).absolute()
    if stages.is_finished(directory):
        info = stages.check_finished_stage(config, stage)
        log(f"[{stage}] reusing the finished baseline in {directory} "
            f"({info.get('wall_time_s', float('nan')) / 60:.1f} min, commit {info.get('commit')})")
        return info
    own = directory.parent == pathlib.Path(config.workdir).absolute()
    log(f"[{stage}] no finished baseline in {directory}; training it there")
    with run_dir.DirLock(directory.parent, enabled=not own):
        training.run_training_stage(config, stage, log=log)
    return stages.check_finished_stage(config, stage)


def run(config: ConfigDict, log=functools.partial(print, flush=True), *, fresh: bool = False) -> None:
    """Runs `config.stage` (or every stage) of the factorial; `fresh` moves the factorial's own
    workdir aside first (never the baselines')."""
    config_lib.validate(config)
    workdir = pathlib.Path(config.workdir).absolute()
    if fresh:
        run_dir.start_fresh(workdir)
    if config.stage == "all":
        to_run = ["deceptive", *config_lib.arm_order(config), "honest", "evaluate"]
    else:
        to_run = [config.stage]
    with run_dir.DirLock(workdir):
        for stage in to_run:
            if stage in config_lib.BASELINE_STAGES:
                ensure_baseline(config, stage, log)
            elif stage == "evaluate":
                factorial_evaluate.run_evaluation_stage(config, log=log)
            else:
                training.run_training_stage(config, stage, log=log)
