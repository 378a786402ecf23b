"""The experiment's stages: two baselines, three fine-tuning conditions, evaluation.

Each training stage runs in chunks of `chunk_episodes` (one compiled scan, vmapped over
seeds), prints progress, checkpoints the full state every `checkpoint_every_chunks` chunks and
the trained agents at the end. A rerun skips finished stages and resumes an interrupted one
from its last checkpoint.
"""

from __future__ import annotations

import functools
import pathlib
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

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
_STAGE_STREAM = {"deceptive": 0, "honest": 0, "soo": 1, "capability": 1, "random": 2}


def stage_keys(seeds, stage: str) -> jax.Array:
    return jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), _STAGE_STREAM[stage])
                      for s in seeds])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def stage_dir(config: ConfigDict, stage: str) -> pathlib.Path:
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
    keys = stage_keys(config.seeds, stage)
    if stage in config_lib.BASELINE_STAGES:
        params = config_lib.env_params(config, stage)
        return lambda: jax.vmap(lambda k: init_train_state(k, hyper, params))(keys)
    pretrained = load_agents(config, "deceptive")
    params = config_lib.env_params(config, "deceptive")
    return lambda: jax.vmap(lambda k, a: init_finetune_state(k, hyper, params, a))(keys, pretrained)


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
    ckpt = StageCheckpoints(stage_dir(config, stage))
    if ckpt.is_done():
        log(f"[{stage}] already finished ({ckpt.done_info()['wall_time_s']:.0f} s); skipping")
        return
    hyper = config_lib.maddpg_hyper(config)
    is_baseline = stage in config_lib.BASELINE_STAGES
    n_episodes = config.baseline.n_episodes if is_baseline else config.finetune.n_episodes
    reward_mode = stage if is_baseline else "deceptive"
    soo = None if is_baseline else config_lib.soo_config(config, stage)
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
        + (f", loss: {soo}" if soo else "") + " (first chunk includes compilation)")
    start = time.time()
    n_chunks = n_episodes // config.chunk_episodes
    first_chunk = episodes_done // config.chunk_episodes
    for c in range(first_chunk, n_chunks):
        first_step = jnp.int32(c * config.chunk_episodes * hyper.episode_length)
        state, outputs = chunk(state, first_step, params)
        episodes_done = (c + 1) * config.chunk_episodes
        elapsed = elapsed_before + time.time() - start
        record = _chunk_record(outputs, episodes_done, elapsed)
        history.append(record)
        done_now = c + 1 - first_chunk
        if (c + 1) % config.log_every_chunks == 0 or c + 1 == n_chunks:
            eta = (time.time() - start) / done_now * (n_chunks - c - 1)
            losses = record["losses"]
            extra = ""
            if "soo_loss" in losses and losses["soo_loss"] is not None:
                extra = f" | soo {losses['soo_loss']:.4g} cap {losses['capability_loss']:.4g}"
            log(f"[{stage}] ep {episodes_done}/{n_episodes} | return adv "
                f"{record['return_adversary']:.2f} blue {record['return_blue']:.2f} | trap "
                f"{record['trap_rate']:.2f}{extra} | elapsed {_fmt_time(elapsed)} | "
                f"ETA {_fmt_time(eta)}")
        if (c + 1) % config.checkpoint_every_chunks == 0 and c + 1 < n_chunks:
            ckpt.save_progress(episodes_done, state, history)
    info = {"stage": stage, "episodes": n_episodes, "seeds": list(config.seeds),
            "wall_time_s": elapsed_before + time.time() - start, "commit": git_commit(),
            "device": str(jax.devices()[0].device_kind), "reward_mode": reward_mode,
            "loss": str(soo) if soo else None}
    ckpt.save_final(state.agents, info, history)
    log(f"[{stage}] finished in {_fmt_time(info['wall_time_s'])}")


def run(config: ConfigDict, log=functools.partial(print, flush=True)) -> None:
    config_lib.validate(config)
    workdir = pathlib.Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=1))
    stages = config_lib.STAGES if config.stage == "all" else (config.stage,)
    for stage in stages:
        if stage == "evaluate":
            from soo_jax.rl import evaluate  # noqa: PLC0415  (heavy; only when needed)

            evaluate.run_evaluation_stage(config, log=log)
        else:
            run_training_stage(config, stage, log=log)
