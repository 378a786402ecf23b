"""One training stage (a baseline, a fine-tuning condition or a factorial arm): the seeds vmapped,
in chunks of `chunk_episodes` episodes (one compiled scan each).

A stage prints progress, checkpoints the full state every `checkpoint_every_chunks` chunks and
the trained agents at the end. A rerun skips a finished stage and resumes an interrupted one
from its last checkpoint. Each stage directory has a manifest of the settings its result
depends on (`stages.stage_settings`): a rerun with other values there is refused, naming each key.
SIGINT/SIGTERM end a stage after the current chunk with a checkpoint.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from soo_jax import run_dir
from soo_jax.rl import config as config_lib
from soo_jax.rl import stages
from soo_jax.rl.checkpoints import StageCheckpoints
from soo_jax.rl.maddpg.train import (
    episode_summary, init_finetune_state, init_train_state, make_train_chunk, unalias,
)
from soo_jax.rl.soo import SOOActorStep


def initial_state(config: ConfigDict, stage: str):
    """A function of no arguments building the stage's initial train state, stacked over seeds
    (a fine-tuning stage loads the deceptive baseline, checked against this config first)."""
    hyper = config_lib.maddpg_hyper(config)
    r = stages.recipe(config, stage)
    keys = stages.stream_keys(config.seeds, r.stream)
    params = config_lib.env_params(config, r.reward)
    if r.init == "fresh":
        return lambda: jax.vmap(lambda k: init_train_state(k, hyper, params))(keys)
    if stages.is_finished(stages.stage_dir(config, "deceptive")):  # (a missing one: load_agents says so)
        stages.check_finished_stage(config, "deceptive")  # made with the settings this stage records
    pretrained = stages.load_agents(config, "deceptive")
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
    r = stages.recipe(config, stage)
    info = None
    if r.init != "fresh":
        info = {"deceptive_baseline": str(stages.stage_dir(config, "deceptive").absolute())}
    stages.claim_stage(config, stage, info=info)
    ckpt = StageCheckpoints(stages.stage_dir(config, stage))
    if ckpt.complete_interrupted_finish():
        log(f"[{stage}] already finished ({ckpt.done_info()['wall_time_s']:.0f} s); skipping")
        return
    hyper = config_lib.maddpg_hyper(config)
    n_episodes, reward_mode, soo = r.n_episodes, r.reward, r.soo
    params = config_lib.env_params(config, reward_mode)

    init_fn = jax.jit(initial_state(config, stage))
    episodes_done, history, elapsed_before = 0, [], 0.0
    if ckpt.latest_progress() is not None:
        episodes_done, state, history = ckpt.restore_progress(jax.eval_shape(init_fn))
        elapsed_before = history[-1]["elapsed_s"] if history else 0.0
        log(f"[{stage}] resuming at episode {episodes_done}/{n_episodes}")
    else:
        state = unalias(init_fn())
    # Fresh and restored states alike committed to one device: the compiled chunk is reused.
    state = jax.device_put(state, jax.devices()[0])

    chunk = make_train_chunk(hyper, config.chunk_episodes, SOOActorStep(hyper, soo) if soo else None)
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
            "wall_time_s": elapsed_before + time.time() - start, "commit": stages.short_commit(),
            "device": str(jax.devices()[0].device_kind), "reward_mode": reward_mode,
            "loss": str(soo) if soo else None, "init": r.init, "stream": r.stream}
    ckpt.save_final(state.agents, info, history)
    log(f"[{stage}] finished in {stages.format_duration(info['wall_time_s'])}")


def _progress_line(stage: str, record: dict, n_episodes: int, elapsed: float, eta: float) -> str:
    losses = record["losses"]
    extra = ""
    if "soo_loss" in losses and losses["soo_loss"] is not None:
        extra = f" | soo {losses['soo_loss']:.4g} cap {losses['capability_loss']:.4g}"
    return (f"[{stage}] ep {record['episodes_done']}/{n_episodes} | return adv {record['return_adversary']:.2f} "
            f"blue {record['return_blue']:.2f} | trap {record['trap_rate']:.2f}{extra} | elapsed "
            f"{stages.format_duration(elapsed)} | ETA {stages.format_duration(eta)}")
