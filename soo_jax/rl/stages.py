"""What each stage of the RL experiment is and where its result lives: its recipe and key stream,
its directory, the manifest of settings its result depends on (`stage_settings`, checked by
`claim_stage` and `check_finished_stage`), and reading a finished stage back (`is_finished`,
`load_agents`). Running a stage is soo_jax/rl/training.py's, evaluating them evaluate.py's and
factorial_evaluate.py's; soo_jax/rl/experiment.py runs them in order.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl.checkpoints import StageCheckpoints
from soo_jax.rl.maddpg.core import init_agents

# Key streams: both baselines of a seed share one (common random numbers), as do SOO and the
# capability-only control, so their differences come from the reward / the SOO term. The
# random control gets its own stream: its extra term has no gradient, so with a shared stream
# it would reproduce the capability-only run bit for bit; on its own stream it is a replicate.
# A factorial arm names its stream (`arms.<name>.stream`).
_STAGE_STREAM = {"deceptive": 0, "honest": 0, "soo": 1, "capability": 1, "random": 2}


def stream_keys(seeds, stream: int) -> jax.Array:
    """(seeds, 2): the key of `stream` for each seed; everything a stage draws derives from it."""
    return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), stream) for s in seeds])


def stage_keys(seeds, stage: str) -> jax.Array:
    return stream_keys(seeds, _STAGE_STREAM[stage])


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What a training stage does (a baseline, a fine-tuning condition or a factorial arm)."""

    reward: str  # the environment's reward mode
    n_episodes: int
    init: str  # "fresh" (a baseline), "baseline" (from the deceptive baseline) or "scratch"
    loss: str | None  # fine-tuning loss (config_lib.FINETUNE_LOSSES); None for a baseline
    stream: int
    soo: object = None  # SOOConfig of the extra blue-actor step, or None


def recipe(config: ConfigDict, stage: str) -> Recipe:
    if stage in config_lib.BASELINE_STAGES:
        return Recipe(stage, config.baseline.n_episodes, "fresh", None, _STAGE_STREAM[stage])
    f = config_lib.finetune_of(config, stage)
    if config_lib.is_arm(config, stage):
        loss, stream = config.arms[stage].loss, config.arms[stage].stream
    else:
        loss, stream = stage, _STAGE_STREAM[stage]
    return Recipe(f.reward, f.n_episodes, f.init, loss, stream, config_lib.soo_config(config, loss, f))


def short_commit() -> str:
    """The checkout's commit as done.json and results.json record it: 12 hex digits, or "unknown"
    outside a git checkout."""
    return (run_dir.git_commit() or "unknown")[:12]


# What a stage's result depends on: every stage the seeds, environment, learner and chunking
# (the key streams are split per chunk); fine-tuning stages also the deceptive baseline they start
# from and their own settings; the evaluation everything. Where and how often progress is
# logged or checkpointed never changes a result (resumes are bitwise).
# A factorial arm: its fine-tuning settings as it runs them (config.finetune with the arm's own
# factors, recorded as finetune.*) and its loss and key stream (arm.*). Its evaluation: all of it.
_COMMON = ("seeds", "chunk_episodes", "env", "maddpg")
_STAGE_SECTIONS = {**{s: _COMMON + ("baseline",) for s in config_lib.BASELINE_STAGES},
                   **{s: _COMMON + ("baseline", "finetune") for s in config_lib.FINETUNE_STAGES},
                   "evaluate": _COMMON + ("baseline", "finetune", "evaluate")}
_FACTORIAL_EVALUATE_SECTIONS = _COMMON + ("baseline", "finetune", "arms", "evaluate")
FRESH_HINT = "another --config.workdir, or --fresh to move the old workdir aside"


def _select(flat: dict, sections) -> dict:
    return {k: v for k, v in flat.items() if any(k == s or k.startswith(s + ".") for s in sections)}


def stage_settings(config: ConfigDict, stage: str) -> dict:
    flat = run_dir.flatten(config.to_dict())
    if config_lib.is_arm(config, stage):
        r = recipe(config, stage)
        return {**_select(flat, _COMMON + ("baseline",)),
                **run_dir.flatten({"finetune": config_lib.finetune_of(config, stage).to_dict()}),
                "arm.loss": r.loss, "arm.stream": r.stream}
    if stage == "evaluate" and "arms" in config:
        return _select(flat, _FACTORIAL_EVALUATE_SECTIONS)
    return _select(flat, _STAGE_SECTIONS[stage])


def _stored_manifest(directory: pathlib.Path) -> dict | None:
    path = directory / run_dir.MANIFEST_NAME
    return run_dir.read_json(path) if path.is_file() else None


def claim_stage(config: ConfigDict, stage: str, info: dict | None = None) -> pathlib.Path:
    directory = stage_dir(config, stage)
    return run_dir.check_manifest(directory, stage_settings(config, stage), kind=f"rl/{stage}",
                                  fresh_hint=FRESH_HINT, info=info)


def is_finished(directory: pathlib.Path) -> bool:
    """Read-only (StageCheckpoints creates directories): done.json is written last."""
    return (directory / "done.json").is_file() and (directory / "final").is_dir()


def check_finished_stage(config: ConfigDict, stage: str) -> dict:
    """A finished stage (e.g. a baseline in another experiment's workdir) checked against the
    settings `config` needs from it, reading only: nothing is written there. Returns its
    done.json; RunDirError names every differing key."""
    directory = stage_dir(config, stage)
    settings = stage_settings(config, stage)
    stored = _stored_manifest(directory)
    if stored is None:
        raise run_dir.RunDirError(f"{directory} has no {run_dir.MANIFEST_NAME}: it was not made by this version; "
                                  f"use another --config.baseline_workdir")
    if stored.get("kind") != f"rl/{stage}":
        raise run_dir.RunDirError(f"{directory} holds a {stored.get('kind')!r} run, not an 'rl/{stage}' run")
    diffs = run_dir.differences(stored.get("settings", {}), settings)
    if diffs:
        raise run_dir.RunDirError(f"{directory} was made with other settings than this run needs "
                                  f"({'; '.join(diffs)})")
    return StageCheckpoints(directory).done_info()


def format_duration(seconds: float) -> str:
    """`1h02m03s`, or `2m03s` under an hour (whole seconds)."""
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def stage_dir(config: ConfigDict, stage: str) -> pathlib.Path:
    """`<workdir>/<stage>`; a baseline lives in `baseline_workdir` where the config has one (the
    factorial reuses configs/rl_deception.py's baselines)."""
    if stage in config_lib.BASELINE_STAGES and config.get("baseline_workdir"):
        return pathlib.Path(config.baseline_workdir) / stage
    return pathlib.Path(config.workdir) / stage


def abstract_agents(config: ConfigDict):
    hyper = config_lib.maddpg_hyper(config)
    keys = stage_keys(config.seeds, "deceptive")
    return jax.eval_shape(jax.vmap(lambda k: init_agents(k, hyper)), keys)


def load_agents(config: ConfigDict, stage: str):
    """A finished stage's trained agents, stacked over seeds."""
    return StageCheckpoints(stage_dir(config, stage)).restore_final(abstract_agents(config))
