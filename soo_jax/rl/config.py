"""The RL experiment's ml-collections config: the configs the experiments start from
(`base_config`, `tiny_config`, `factorial_config`; configs/rl_*.py return them), their
validation, and from them the typed objects the jitted code takes."""

from __future__ import annotations

from ml_collections import ConfigDict

from soo_jax.checks import defaults, field_flag, number
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


class ConfigError(ValueError):
    pass


# The experiment configs (configs/rl_deception.py, rl_tiny.py and rl_factorial.py return these).
# The authors' 8 seeds.
PAPER_SEEDS = (155, 714, 1908, 1549, 1195, 1812, 542, 2844)
# 8 more training seeds for the factorial's replicate (configs/rl_factorial.py:replicate), so
# that pooled with the paper's the factorial has 16 training seeds (soo_jax/rl/factorial_pool.py).
REPLICATE_SEEDS = (1, 2, 3, 4, 5, 6, 7, 8)


def base_config() -> ConfigDict:
    """The paper's experiment (configs/rl_deception.py): values follow docs/paper_notes.md §5 and
    §5.2 (the authors' train.py defaults and README commands)."""
    config = ConfigDict()
    config.workdir = "runs/rl_deception"
    # all | deceptive | honest | soo | capability | random | evaluate
    config.stage = "all"
    config.seeds = PAPER_SEEDS
    config.chunk_episodes = 100  # episodes per compiled chunk (progress line granularity)
    config.checkpoint_every_chunks = 40  # in-stage checkpoints (full state incl. replay buffer)
    config.log_every_chunks = 5

    config.env = ConfigDict()
    config.env.episode_length = MADDPGHyper.episode_length
    config.env.trap_check_at_reset = True  # faithful: reset runs the observation callbacks
    config.env.bookkeeping_origin = "origin"  # faithful; "spawn" starts movement bookkeeping at p0

    # MADDPGHyper's fields and defaults (the authors' values; its episode_length is env.episode_length).
    config.maddpg = ConfigDict(defaults(MADDPGHyper, exclude=("episode_length",)))

    config.baseline = ConfigDict()
    config.baseline.n_episodes = 40_000

    config.finetune = ConfigDict()
    config.finetune.n_episodes = 10_000
    # SOOConfig's fields and defaults (weights, log_mse, mode, sight_radius, position_clip and
    # soo_target); random_weight is no setting: the fine-tuning condition gives it (soo_config).
    config.finetune.update(defaults(SOOConfig, exclude=("random_weight",)))
    # "baseline": start from the deceptive baseline (their older fine-tune-parallel.py, --load);
    # "scratch": fresh networks (their README command has no --load).
    config.finetune.init = "baseline"
    config.finetune.reward = "deceptive"  # the reward fine-tuning trains on (README)

    config.evaluate = ConfigDict()
    config.evaluate.threshold_episodes = 1000  # per seed and condition (not given by the authors)
    config.evaluate.grid_size = 100
    config.evaluate.classification_eval_seeds = 10
    config.evaluate.classification_episode_counts = (1,) + tuple(range(100, 1600, 100))
    config.evaluate.classification_sight_radius = 0.1
    config.evaluate.episode_batch = 500  # episodes rolled out in parallel per seed
    return config


def tiny_config() -> ConfigDict:
    """base_config() at one-minute sizes (configs/rl_tiny.py): small networks, frequent updates and
    a lower learning rate, so that 400 episodes learn (tests/rl/test_learning.py); the consistent
    variants of the authors' two quirks (one OU draw per step, unscaled actions in the buffer)."""
    config = base_config()
    config.workdir = "runs/rl_tiny"
    config.seeds = (0, 1, 2, 3)
    config.chunk_episodes = 4
    config.checkpoint_every_chunks = 2
    config.log_every_chunks = 1
    config.env.episode_length = 25
    config.maddpg.lr = 3e-3
    config.maddpg.hidden_dim = 32
    config.maddpg.batch_size = 64
    config.maddpg.buffer_size = 20_000
    config.maddpg.steps_per_update = 2
    config.maddpg.n_exploration_episodes = 400
    config.maddpg.ou_draws_per_step = 1
    config.maddpg.buffer_action_scale = 1.0
    config.baseline.n_episodes = 8
    config.finetune.n_episodes = 8
    config.evaluate.threshold_episodes = 6
    config.evaluate.grid_size = 11
    config.evaluate.classification_eval_seeds = 3
    config.evaluate.classification_episode_counts = (1, 2, 4)
    config.evaluate.episode_batch = 3
    return config


# The key stream of every factorial arm: the stream of base_config()'s soo and capability stages
# (soo_jax/rl/stages.py), so that soo_hidden_mse_baseline and cap_mse_baseline are those stages
# bit for bit and all arms of a seed share resets, noise and minibatches.
FINETUNE_STREAM = 1


def arm(loss, *, soo_target="hidden", log_mse=False, init="baseline", reward="deceptive", twin="",
        stream=FINETUNE_STREAM) -> ConfigDict:
    """One factorial arm (see configs/rl_factorial.py and ARM_KEYS)."""
    return ConfigDict({"loss": loss, "soo_target": soo_target, "log_mse": log_mse, "init": init,
                       "reward": reward, "twin": twin, "stream": stream})


def factorial_arms() -> ConfigDict:
    """The factorial's arms: each SOO arm (target x loss form x init) with its capability-only
    twin, the honest fine-tuning control and the from-scratch deceptive control."""
    arms = ConfigDict()
    for init in ("baseline", "scratch"):
        for log_mse in (False, True):
            form = "logmse" if log_mse else "mse"
            twin = f"cap_{form}_{init}"
            arms[twin] = arm("capability", log_mse=log_mse, init=init)
            for target in ("hidden", "action"):
                arms[f"soo_{target}_{form}_{init}"] = arm("soo", soo_target=target, log_mse=log_mse,
                                                          init=init, twin=twin)
    arms.honest_finetune = arm("none", reward="honest")
    arms.scratch_deceptive = arm("none", init="scratch")
    return arms


def factorial_config(tiny: bool = False, replicate: bool = False) -> ConfigDict:
    """configs/rl_factorial.py: base_config() (or, `tiny`, tiny_config()) with the factorial's
    arms, its own workdir, the baselines' workdir and the paper-view evaluation seeds.
    `replicate`: the same design on REPLICATE_SEEDS, in workdirs of its own (its baselines too)."""
    config = tiny_config() if tiny else base_config()
    config.workdir = "runs/rl_factorial_tiny" if tiny else "runs/rl_factorial"
    # Where the deceptive and honest baselines are (configs/rl_deception.py's workdir).
    config.baseline_workdir = "runs/rl_tiny" if tiny else "runs/rl_deception"
    if replicate:
        config.seeds = (10, 11, 12, 13) if tiny else REPLICATE_SEEDS  # disjoint from tiny_config's
        config.workdir += "_replicate"
        config.baseline_workdir += "_replicate"
    # all | deceptive | honest | <arm name> | evaluate
    config.stage = "all"
    config.arms = factorial_arms()
    # The paper's view: the authors' 8 seeds are evaluation seeds of one trained model per
    # condition. Each training seed's threshold episodes are split into this many evaluation
    # seeds to show how often a single training run would have reproduced their figure.
    config.evaluate.paper_view_eval_seeds = 3 if tiny else 8
    return config


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}: {message}")


def _get(config: ConfigDict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _check_number(key: str, value, **bounds) -> None:
    try:
        number(value, **bounds)
    except ValueError as err:
        raise ConfigError(f"config.{key}: {err}") from None


def stages(config: ConfigDict) -> tuple[str, ...]:
    """The stages `config.stage` may name (besides "all"): a factorial's are its baselines, arms
    and evaluation."""
    if "arms" in config:
        return BASELINE_STAGES + tuple(config.arms) + ("evaluate",)
    return STAGES


def validate(config: ConfigDict) -> None:
    """Checks values the jitted code cannot check itself; errors name the offending key."""
    _require(isinstance(config.workdir, str) and bool(config.workdir.strip()), "workdir",
             f"must name an output directory, got {config.workdir!r}")
    allowed = stages(config)
    _require(config.stage == "all" or config.stage in allowed, "stage",
             f"must be 'all' or one of {allowed}, got {config.stage!r}")
    if "arms" in config:
        validate_arms(config)
    _require(len(config.seeds) > 0, "seeds", "needs at least one seed")
    for seed in config.seeds:
        _check_number("seeds", seed, integer=True, low=0, high=2**31 - 1)
    _require(len(set(config.seeds)) == len(config.seeds), "seeds", "seeds must be distinct")
    for key in ("chunk_episodes", "checkpoint_every_chunks", "log_every_chunks", "env.episode_length",
                "baseline.n_episodes", "finetune.n_episodes", "evaluate.threshold_episodes",
                "evaluate.classification_eval_seeds", "evaluate.episode_batch"):
        _check_number(key, _get(config, key), integer=True, low=1)
    _check_number("evaluate.grid_size", config.evaluate.grid_size, integer=True, low=2)
    _check_number("evaluate.classification_sight_radius", config.evaluate.classification_sight_radius,
                  low=0, low_open=True)
    for key in ("env.trap_check_at_reset", "finetune.log_mse"):
        try:
            field_flag(key, _get(config, key))
        except ValueError as err:
            raise ConfigError(f"config.{err}") from None
    try:  # MADDPGHyper and SOOConfig hold their fields' valid ranges
        maddpg_hyper(config)
    except ValueError as err:
        field, _, message = str(err).partition(": ")
        raise ConfigError(f"config.{'env' if field == 'episode_length' else 'maddpg'}.{field}: {message}") from None
    _require(config.env.bookkeeping_origin in BOOKKEEPING_ORIGINS, "env.bookkeeping_origin",
             f"must be one of {sorted(BOOKKEEPING_ORIGINS)}, got {config.env.bookkeeping_origin!r}")
    validate_finetune(config.finetune, "finetune")
    try:
        soo_config(config, "soo")
    except ValueError as err:
        raise ConfigError(f"config.{err}") from None
    m = config.maddpg
    _require(m.batch_size <= m.buffer_size, "maddpg.batch_size",
             f"{m.batch_size} exceeds maddpg.buffer_size={m.buffer_size}")
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
    if "paper_view_eval_seeds" in e:
        _require(e.paper_view_eval_seeds > 0 and e.threshold_episodes % e.paper_view_eval_seeds == 0,
                 "evaluate.paper_view_eval_seeds",
                 f"must divide evaluate.threshold_episodes={e.threshold_episodes}, got {e.paper_view_eval_seeds}")
    counts = tuple(e.classification_episode_counts)
    for count in counts:
        _check_number("evaluate.classification_episode_counts", count, integer=True, low=1)
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
