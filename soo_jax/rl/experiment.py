"""The experiment's stages: two baselines, three fine-tuning conditions, evaluation (or, for a
config with `arms`, the factorial of soo_jax/rl/factorial.py, which runs its arms with the
same functions).

Each training stage runs in chunks of `chunk_episodes` (one compiled scan, vmapped over
seeds), prints progress, checkpoints the full state every `checkpoint_every_chunks` chunks and
the trained agents at the end. A rerun skips finished stages and resumes an interrupted one
from its last checkpoint. Each stage directory has a manifest of the settings its result
depends on (`stage_settings`): a rerun with other values there is refused, naming each key.
SIGINT/SIGTERM end a stage after the current chunk with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl.checkpoints import StageCheckpoints
from soo_jax.rl.maddpg.core import init_agents
from soo_jax.rl.maddpg.train import (
    episode_summary, init_finetune_state, init_train_state, make_train_chunk, unalias,
)

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


def git_commit() -> str:
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


def _with_added_defaults(stored: dict, current: dict) -> dict:
    """`stored` settings of a run made before some of `current`'s keys existed, with those keys
    at the value that run used (config_lib.ADDED_DEFAULTS)."""
    added = {k: v for k, v in config_lib.ADDED_DEFAULTS.items() if k in current and k not in stored}
    return {**stored, **added}


def _legacy_stage_settings(config: ConfigDict, stage: str):
    """A stage directory from before manifests: the workdir's config.json (written by every run
    of that time) says what it was made with, when it is there."""
    def read(directory: pathlib.Path):
        legacy = directory.parent / "config.json"
        if not legacy.is_file():
            return None
        return _with_added_defaults(stage_settings(ConfigDict(run_dir.read_json(legacy)), stage),
                                    stage_settings(config, stage))
    return read


def _stored_manifest(directory: pathlib.Path) -> dict | None:
    path = directory / run_dir.MANIFEST_NAME
    return run_dir.read_json(path) if path.is_file() else None


def claim_stage(config: ConfigDict, stage: str, info: dict | None = None) -> pathlib.Path:
    directory = stage_dir(config, stage)
    settings = stage_settings(config, stage)
    stored = _stored_manifest(directory)
    if stored is not None:  # a manifest from before an added key was made with its default
        settings = {k: v for k, v in settings.items()
                    if not (k in config_lib.ADDED_DEFAULTS and k not in stored.get("settings", {})
                            and v == config_lib.ADDED_DEFAULTS[k])}
    return run_dir.check_manifest(directory, settings, kind=f"rl/{stage}", fresh_hint=FRESH_HINT,
                                  legacy_settings=_legacy_stage_settings(config, stage), info=info)


def is_finished(directory: pathlib.Path) -> bool:
    """Read-only (StageCheckpoints creates directories): done.json is written last."""
    return (directory / "done.json").is_file() and (directory / "final").is_dir()


def check_finished_stage(config: ConfigDict, stage: str) -> dict:
    """A finished stage (e.g. a baseline in another experiment's workdir) checked against the
    settings `config` needs from it, reading only: nothing is written there, not even a manifest
    for a directory from before manifests. Returns its done.json; RunDirError names every
    differing key."""
    directory = stage_dir(config, stage)
    settings = stage_settings(config, stage)
    stored = _stored_manifest(directory)
    if stored is not None:
        if stored.get("kind") != f"rl/{stage}":
            raise run_dir.RunDirError(f"{directory} holds a {stored.get('kind')!r} run, not an 'rl/{stage}' run")
        stored_settings = _with_added_defaults(stored.get("settings", {}), settings)
    else:
        stored_settings = _legacy_stage_settings(config, stage)(directory)
        if stored_settings is None:
            raise run_dir.RunDirError(f"{directory} has no {run_dir.MANIFEST_NAME} and no ../config.json, so "
                                      f"what made it is unknown")
    diffs = run_dir.differences(stored_settings, settings)
    if diffs:
        raise run_dir.RunDirError(f"{directory} was made with other settings than this run needs "
                                  f"({'; '.join(diffs)})")
    return StageCheckpoints(directory).done_info()


def _fmt_time(seconds: float) -> str:
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


def _initial_state(config: ConfigDict, stage: str):
    hyper = config_lib.maddpg_hyper(config)
    r = recipe(config, stage)
    keys = stream_keys(config.seeds, r.stream)
    params = config_lib.env_params(config, r.reward)
    if r.init == "fresh":
        return lambda: jax.vmap(lambda k: init_train_state(k, hyper, params))(keys)
    if is_finished(stage_dir(config, "deceptive")):  # (a missing one: load_agents says so)
        check_finished_stage(config, "deceptive")  # made with the settings this stage records
    pretrained = load_agents(config, "deceptive")
    scratch = r.init == "scratch"
    return lambda: jax.vmap(lambda k, a: init_finetune_state(k, hyper, params, a, from_scratch=scratch))(
        keys, pretrained)


def _chunk_record(outputs, episodes_done: int, elapsed: float) -> dict:
    summary = jax.tree.map(np.asarray, episode_summary(outputs))
    returns = summary["return"]  # (seeds, episodes, agents)
    update = jax.tree.map(np.asarray, outputs["update"])
    updated = update.pop("updated")
    losses = {k: float(v[updated].mean()) if updated.any() else None for k, v in update.items()}
    for name, value in losses.items():
        if value is not None and not np.isfinite(value):
            raise FloatingPointError(
                f"{name} became {value} by episode {episodes_done}; training diverged"
            )
    return {
        "episodes_done": episodes_done,
        "return_adversary": float(returns[..., 0].mean()),
        "return_blue": float(returns[..., 1].mean()),
        "return_blue_per_seed": returns[..., 1].mean(axis=1).tolist(),
        "trap_rate": float(summary["trapped"].mean()),
        "losses": losses,
        "elapsed_s": elapsed,
    }


def run_training_stage(config: ConfigDict, stage: str, log=functools.partial(print, flush=True)) -> None:
    r = recipe(config, stage)
    info = None
    if r.init != "fresh":
        info = {"deceptive_baseline": str(stage_dir(config, "deceptive").absolute())}
    claim_stage(config, stage, info=info)
    ckpt = StageCheckpoints(stage_dir(config, stage))
    if ckpt.complete_interrupted_finish():
        log(f"[{stage}] already finished ({ckpt.done_info()['wall_time_s']:.0f} s); skipping")
        return
    hyper = config_lib.maddpg_hyper(config)
    n_episodes, reward_mode, soo = r.n_episodes, r.reward, r.soo
    params = config_lib.env_params(config, reward_mode)

    init_fn = jax.jit(_initial_state(config, stage))
    episodes_done, history, elapsed_before = 0, [], 0.0
    if ckpt.latest_progress() is not None:
        episodes_done, state, history = ckpt.restore_progress(jax.eval_shape(init_fn))
        elapsed_before = history[-1]["elapsed_s"] if history else 0.0
        log(f"[{stage}] resuming at episode {episodes_done}/{n_episodes}")
    else:
        state = unalias(init_fn())
    # Fresh and restored states alike committed to one device: the compiled chunk is reused.
    state = jax.device_put(state, jax.devices()[0])

    chunk = make_train_chunk(hyper, config.chunk_episodes, soo)
    log(f"[{stage}] {len(config.seeds)} seeds x {n_episodes} episodes, reward={reward_mode}"
        + (f", init={r.init}" if r.init != "fresh" else "")
        + (f", loss: {soo}" if soo else "") + " (first chunk includes compilation)")
    start = time.time()
    n_chunks = n_episodes // config.chunk_episodes
    first_chunk = episodes_done // config.chunk_episodes
    stop = run_dir.StopRequest()
    with stop:
        for c in range(first_chunk, n_chunks):
            first_step = jnp.int32(c * config.chunk_episodes * hyper.episode_length)
            state, outputs = chunk(state, first_step, params)
            episodes_done = (c + 1) * config.chunk_episodes
            elapsed = elapsed_before + time.time() - start
            record = _chunk_record(outputs, episodes_done, elapsed)
            history.append(record)
            if (c + 1) % config.log_every_chunks == 0 or c + 1 == n_chunks:
                eta = (time.time() - start) / (c + 1 - first_chunk) * (n_chunks - c - 1)
                log(_progress_line(stage, record, n_episodes, elapsed, eta))
            if stop and c + 1 < n_chunks:
                ckpt.save_progress(episodes_done, state, history)
                raise stop.interrupted(f"[{stage}] interrupted at episode {episodes_done}/{n_episodes}; checkpoint "
                                       f"written; rerun the same command to resume")
            if (c + 1) % config.checkpoint_every_chunks == 0 and c + 1 < n_chunks:
                ckpt.save_progress(episodes_done, state, history)
    info = {"stage": stage, "episodes": n_episodes, "seeds": list(config.seeds),
            "wall_time_s": elapsed_before + time.time() - start, "commit": git_commit(),
            "device": str(jax.devices()[0].device_kind), "reward_mode": reward_mode,
            "loss": str(soo) if soo else None, "init": r.init, "stream": r.stream}
    ckpt.save_final(state.agents, info, history)
    log(f"[{stage}] finished in {_fmt_time(info['wall_time_s'])}")


def _progress_line(stage: str, record: dict, n_episodes: int, elapsed: float, eta: float) -> str:
    losses = record["losses"]
    extra = ""
    if "soo_loss" in losses and losses["soo_loss"] is not None:
        extra = f" | soo {losses['soo_loss']:.4g} cap {losses['capability_loss']:.4g}"
    return (f"[{stage}] ep {record['episodes_done']}/{n_episodes} | return adv {record['return_adversary']:.2f} "
            f"blue {record['return_blue']:.2f} | trap {record['trap_rate']:.2f}{extra} | elapsed "
            f"{_fmt_time(elapsed)} | ETA {_fmt_time(eta)}")


def run(config: ConfigDict, log=functools.partial(print, flush=True), *, fresh: bool = False) -> None:
    """Runs `config.stage` (or every stage) in `config.workdir`, locked against a second process;
    `fresh` moves an existing workdir aside first."""
    if "arms" in config:
        from soo_jax.rl import factorial  # noqa: PLC0415  (imports this module)

        return factorial.run(config, log, fresh=fresh)
    config_lib.validate(config)
    workdir = pathlib.Path(config.workdir).absolute()
    if fresh:
        run_dir.start_fresh(workdir)
    stages = config_lib.STAGES if config.stage == "all" else (config.stage,)
    with run_dir.DirLock(workdir):
        for stage in stages:
            if stage == "evaluate":
                from soo_jax.rl import evaluate  # noqa: PLC0415  (heavy; only when needed)

                evaluate.run_evaluation_stage(config, log=log)
            else:
                run_training_stage(config, stage, log=log)
