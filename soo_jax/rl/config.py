"""From the ml-collections experiment config to the typed objects the jitted code takes."""

from __future__ import annotations

from ml_collections import ConfigDict

from soo_jax.rl.env import BOOKKEEPING_ORIGINS, EnvParams, reward_mode_id
from soo_jax.rl.maddpg.core import MADDPGHyper
from soo_jax.rl.soo import SOO_MODES, SOO_TARGETS, SOOConfig

BASELINE_STAGES = ("deceptive", "honest")
FINETUNE_STAGES = ("soo", "capability", "random")
STAGES = BASELINE_STAGES + FINETUNE_STAGES + ("evaluate",)
# Fine-tuning losses on the blue actor: SOO + capability, capability only, the authors' random
# control, or none (plain MADDPG, the factorial's positive and undertraining controls).
FINETUNE_LOSSES = FINETUNE_STAGES + ("none",)
FINETUNE_INITS = ("baseline", "scratch")
REWARD_MODES = ("deceptive", "honest")
# Settings added after stage manifests existed, with the value every earlier run used: a manifest
# (or a legacy config.json) without one of them was made with its default.
ADDED_DEFAULTS = {"finetune.soo_target": "hidden", "finetune.init": "baseline",
                  "finetune.reward": "deceptive"}


class ConfigError(ValueError):
    pass


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}: {message}")


def stages(config: ConfigDict) -> tuple[str, ...]:
    """The stages `config.stage` may name (besides "all"): a factorial's are its baselines, arms
    and evaluation."""
    if "arms" in config:
        return BASELINE_STAGES + tuple(config.arms) + ("evaluate",)
    return STAGES


def validate(config: ConfigDict) -> None:
    """Checks values the jitted code cannot check itself; errors name the offending key."""
    allowed = stages(config)
    _require(config.stage == "all" or config.stage in allowed, "stage",
             f"must be 'all' or one of {allowed}, got {config.stage!r}")
    if "arms" in config:
        validate_arms(config)
    _require(len(config.seeds) > 0, "seeds", "needs at least one seed")
    _require(len(set(config.seeds)) == len(config.seeds), "seeds", "seeds must be distinct")
    _require(config.env.bookkeeping_origin in BOOKKEEPING_ORIGINS, "env.bookkeeping_origin",
             f"must be one of {sorted(BOOKKEEPING_ORIGINS)}, got {config.env.bookkeeping_origin!r}")
    validate_finetune(config.finetune, "finetune")
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
    if "paper_view_eval_seeds" in e:
        _require(e.paper_view_eval_seeds > 0 and e.threshold_episodes % e.paper_view_eval_seeds == 0,
                 "evaluate.paper_view_eval_seeds",
                 f"must divide evaluate.threshold_episodes={e.threshold_episodes}, got {e.paper_view_eval_seeds}")
    counts = tuple(e.classification_episode_counts)
    _require(len(counts) > 0 and min(counts) > 0 and list(counts) == sorted(counts),
             "evaluate.classification_episode_counts", f"must be increasing positives, got {counts}")


def validate_finetune(f: ConfigDict, key: str) -> None:
    """The fine-tuning choices (`key` names the section in errors: finetune or arms.<name>)."""
    for name, allowed in (("mode", SOO_MODES), ("soo_target", SOO_TARGETS),
                          ("init", FINETUNE_INITS), ("reward", REWARD_MODES)):
        if name in f:
            _require(f[name] in allowed, f"{key}.{name}", f"must be one of {allowed}, got {f[name]!r}")


# A factorial arm (configs/rl_factorial.py) sets these fine-tuning keys itself; the rest of its
# fine-tuning settings come from config.finetune.
ARM_FACTORS = ("soo_target", "log_mse", "init", "reward")
ARM_KEYS = ARM_FACTORS + ("loss", "stream", "twin")


def is_arm(config: ConfigDict, stage: str) -> bool:
    return "arms" in config and stage in config.arms


def finetune_of(config: ConfigDict, stage: str) -> ConfigDict:
    """The fine-tuning settings a stage runs with: `config.finetune`, and for a factorial arm
    with that arm's own factors."""
    f = ConfigDict(config.finetune.to_dict())
    if is_arm(config, stage):
        for key in ARM_FACTORS:
            f[key] = config.arms[stage][key]
    return f


def validate_arms(config: ConfigDict) -> None:
    """A factorial's arms: each names every factor, its loss and key stream; an SOO arm names its
    capability-only twin, which must share its init, loss form, reward and key stream (so that the
    SOO effect is a paired difference on common random numbers)."""
    _require(len(config.arms) > 0, "arms", "needs at least one arm")
    for name, arm in config.arms.items():
        key = f"arms.{name}"
        _require(name not in BASELINE_STAGES + ("evaluate", "all"), key, "is a reserved stage name")
        missing = [k for k in ARM_KEYS if k not in arm]
        _require(not missing, key, f"needs {', '.join(missing)}")
        _require(arm.loss in FINETUNE_LOSSES, f"{key}.loss", f"must be one of {FINETUNE_LOSSES}, got {arm.loss!r}")
        validate_finetune(arm, key)
        _require(isinstance(arm.log_mse, bool), f"{key}.log_mse", f"must be True or False, got {arm.log_mse!r}")
        _require(isinstance(arm.stream, int) and arm.stream >= 0, f"{key}.stream",
                 f"must be a non-negative integer, got {arm.stream!r}")
        if arm.loss != "soo":
            _require(arm.twin == "", f"{key}.twin", f"only an SOO arm has a twin, got {arm.twin!r}")
            continue
        _require(arm.twin in config.arms, f"{key}.twin", f"must name an arm, got {arm.twin!r}")
        twin = config.arms[arm.twin]
        _require(twin.loss == "capability", f"{key}.twin", f"{arm.twin!r} must be capability-only, not {twin.loss!r}")
        for factor in ("init", "log_mse", "reward", "stream"):
            _require(twin[factor] == arm[factor], f"{key}.twin",
                     f"{arm.twin!r} has {factor}={twin[factor]!r}, the arm {arm[factor]!r}")


def arm_order(config: ConfigDict) -> list[str]:
    """Arms in run order: each twin followed by the SOO arms paired with it, then the rest."""
    arms = config.arms
    order = []
    for twin in arms:
        paired = [name for name in arms if arms[name].loss == "soo" and arms[name].twin == twin]
        if paired:
            order += [twin] + paired
    return order + [name for name in arms if name not in order]


def soo_arms(config: ConfigDict) -> list[str]:
    return [name for name in config.arms if config.arms[name].loss == "soo"]


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


def soo_config(config: ConfigDict, condition: str, finetune: ConfigDict | None = None) -> SOOConfig | None:
    """The fine-tuning loss of one condition: SOO + capability, one of the controls, or None
    (`"none"`: no extra actor step). `finetune` overrides `config.finetune` (a factorial arm's)."""
    f = config.finetune if finetune is None else finetune
    weights = {
        "soo": (f.soo_weight, f.capability_weight, 0.0),
        "capability": (0.0, f.capability_weight, 0.0),
        "random": (0.0, f.capability_weight, 1.0),
        "none": None,
    }
    if condition not in weights:
        raise ConfigError(f"unknown fine-tuning condition {condition!r}; one of {FINETUNE_LOSSES}")
    if weights[condition] is None:
        return None
    soo_w, cap_w, rand_w = weights[condition]
    return SOOConfig(soo_weight=soo_w, capability_weight=cap_w, random_weight=rand_w,
                     log_mse=f.log_mse, mode=f.mode, sight_radius=f.sight_radius,
                     position_clip=f.position_clip, soo_target=f.soo_target)
