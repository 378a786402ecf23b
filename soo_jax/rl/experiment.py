"""The experiment's stages in order, in one locked workdir: two baselines, three fine-tuning
conditions, evaluation (soo_jax/rl/training.py, soo_jax/rl/evaluate.py); or, for a config with
`arms`, the factorial of soo_jax/rl/factorial.py, which runs its arms with the same training
stage.

Finished stages are skipped and an interrupted one resumes (see soo_jax/rl/training.py); what
each stage records and where it lives is soo_jax/rl/stages.py's.
"""

from __future__ import annotations

import functools
import pathlib

from ml_collections import ConfigDict

from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl import evaluate, factorial, training


def run(config: ConfigDict, log=functools.partial(print, flush=True), *, fresh: bool = False) -> None:
    """Runs `config.stage` (or every stage) in `config.workdir`, locked against a second process;
    `fresh` moves an existing workdir aside first."""
    if "arms" in config:
        return factorial.run(config, log, fresh=fresh)
    config_lib.validate(config)
    workdir = pathlib.Path(config.workdir).absolute()
    if fresh:
        run_dir.start_fresh(workdir)
    to_run = config_lib.STAGES if config.stage == "all" else (config.stage,)
    with run_dir.DirLock(workdir):
        for stage in to_run:
            if stage == "evaluate":
                evaluate.run_evaluation_stage(config, log=log)
            else:
                training.run_training_stage(config, stage, log=log)
