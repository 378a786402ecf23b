"""From the ml-collections experiment config to the typed objects the jitted code takes."""

from __future__ import annotations

from ml_collections import ConfigDict

from soo_jax.rl.env import BOOKKEEPING_ORIGINS, EnvParams, reward_mode_id
from soo_jax.rl.maddpg.core import MADDPGHyper
from soo_jax.rl.soo import SOO_MODES, SOOConfig

BASELINE_STAGES = ("deceptive", "honest")
FINETUNE_STAGES = ("soo", "capability", "random")
STAGES = BASELINE_STAGES + FINETUNE_STAGES + ("evaluate",)


class ConfigError(ValueError):
    pass


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}: {message}")


def validate(config: ConfigDict) -> None:
    """Checks values the jitted code cannot check itself; errors name the offending key."""
    _require(config.stage == "all" or config.stage in STAGES, "stage",
             f"must be 'all' or one of {STAGES}, got {config.stage!r}")
    _require(len(config.seeds) > 0, "seeds", "needs at least one seed")
    _require(len(set(config.seeds)) == len(config.seeds), "seeds", "seeds must be distinct")
    _require(config.env.bookkeeping_origin in BOOKKEEPING_ORIGINS, "env.bookkeeping_origin",
             f"must be one of {sorted(BOOKKEEPING_ORIGINS)}, got {config.env.bookkeeping_origin!r}")
    _require(config.finetune.mode in SOO_MODES, "finetune.mode",
             f"must be one of {SOO_MODES}, got {config.finetune.mode!r}")
    m = config.maddpg
    for key in ("batch_size", "buffer_size", "steps_per_update", "hidden_dim",
                "n_exploration_episodes", "ou_draws_per_step"):
        _require(m[key] > 0, f"maddpg.{key}", f"must be positive, got {m[key]}")
    _require(m.batch_size <= m.buffer_size, "maddpg.batch_size",
             f"{m.batch_size} exceeds maddpg.buffer_size={m.buffer_size}")
    _require(config.env.episode_length > 0, "env.episode_length", "must be positive")
    _require(config.chunk_episodes > 0, "chunk_episodes", "must be positive")
    steps = config.chunk_episodes * config.env.episode_length
    _require(steps % m.steps_per_update == 0, "chunk_episodes",
             f"{config.chunk_episodes} episodes x {config.env.episode_length} steps must be a "
             f"multiple of maddpg.steps_per_update={m.steps_per_update}")
    for key in ("baseline.n_episodes", "finetune.n_episodes"):
        section, name = key.split(".")
        n = config[section][name]
        _require(n > 0 and n % config.chunk_episodes == 0, key,
                 f"must be a positive multiple of chunk_episodes={config.chunk_episodes}, got {n}")
    e = config.evaluate
    _require(e.threshold_episodes > 0, "evaluate.threshold_episodes", "must be positive")
    _require(e.classification_eval_seeds > 0, "evaluate.classification_eval_seeds",
             "must be positive")
    counts = tuple(e.classification_episode_counts)
    _require(len(counts) > 0 and min(counts) > 0 and list(counts) == sorted(counts),
             "evaluate.classification_episode_counts", f"must be increasing positives, got {counts}")


def maddpg_hyper(config: ConfigDict) -> MADDPGHyper:
    fields = dict(config.maddpg)
    return MADDPGHyper(episode_length=config.env.episode_length, **fields)


def env_params(config: ConfigDict, reward_mode: str = "deceptive") -> EnvParams:
    return EnvParams(
        max_steps_in_episode=config.env.episode_length,
        reward_mode=reward_mode_id(reward_mode),
        trap_check_at_reset=config.env.trap_check_at_reset,
        bookkeeping_origin=BOOKKEEPING_ORIGINS[config.env.bookkeeping_origin],
    )


def soo_config(config: ConfigDict, condition: str) -> SOOConfig:
    """The fine-tuning loss of one condition: SOO + capability, or one of the controls."""
    f = config.finetune
    weights = {
        "soo": (f.soo_weight, f.capability_weight, 0.0),
        "capability": (0.0, f.capability_weight, 0.0),
        "random": (0.0, f.capability_weight, 1.0),
    }
    if condition not in weights:
        raise ConfigError(f"unknown fine-tuning condition {condition!r}; one of {FINETUNE_STAGES}")
    soo_w, cap_w, rand_w = weights[condition]
    return SOOConfig(soo_weight=soo_w, capability_weight=cap_w, random_weight=rand_w,
                     log_mse=f.log_mse, mode=f.mode, sight_radius=f.sight_radius,
                     position_clip=f.position_clip)
