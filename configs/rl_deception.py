"""The paper's RL experiment: physical deception, MADDPG baselines, SOO fine-tuning, metrics.

python launch/rl.py --config configs/rl_deception.py [--config.stage=deceptive ...]
Values follow docs/paper_notes.md §5 and §5.2 (the authors' train.py defaults and README
commands).
"""

from ml_collections import ConfigDict

SEEDS = (155, 714, 1908, 1549, 1195, 1812, 542, 2844)


def get_config() -> ConfigDict:
    config = ConfigDict()
    config.workdir = "runs/rl_deception"
    # all | deceptive | honest | soo | capability | random | evaluate
    config.stage = "all"
    config.seeds = SEEDS
    config.chunk_episodes = 100  # episodes per compiled chunk (progress line granularity)
    config.checkpoint_every_chunks = 40  # in-stage checkpoints (full state incl. replay buffer)
    config.log_every_chunks = 5

    config.env = ConfigDict()
    config.env.episode_length = 50
    config.env.trap_check_at_reset = True  # faithful: reset runs the observation callbacks
    config.env.bookkeeping_origin = "origin"  # faithful; "spawn" starts movement bookkeeping at p0

    config.maddpg = ConfigDict()
    config.maddpg.hidden_dim = 64
    config.maddpg.lr = 0.01
    config.maddpg.gamma = 0.95
    config.maddpg.tau = 0.01
    config.maddpg.grad_clip = 0.5
    config.maddpg.actor_output_penalty = 1e-3
    config.maddpg.batch_size = 1024
    config.maddpg.buffer_size = 1_000_000
    config.maddpg.steps_per_update = 100
    config.maddpg.init_noise_scale = 0.3
    config.maddpg.final_noise_scale = 0.0
    config.maddpg.n_exploration_episodes = 25_000
    config.maddpg.ou_theta = 0.15
    config.maddpg.ou_sigma = 0.2
    config.maddpg.ou_mu = 0.0
    config.maddpg.ou_draws_per_step = 3  # faithful (3 policy calls per step); 1 = consistent
    config.maddpg.buffer_action_scale = 5.0  # faithful (x5 in place); 1.0 = consistent

    config.baseline = ConfigDict()
    config.baseline.n_episodes = 40_000

    config.finetune = ConfigDict()
    config.finetune.n_episodes = 10_000
    config.finetune.soo_weight = 1.0
    config.finetune.capability_weight = 1.0
    config.finetune.log_mse = False  # True: the authors' log(MSE + 1e-25) for both terms
    config.finetune.mode = "minibatch"  # or "last_step" (the authors' train.py)
    config.finetune.sight_radius = 0.125
    config.finetune.position_clip = 0.9
    # What the SOO term compares: "hidden" = concat(h1, h2) (the authors' evaluation scripts),
    # "action" = the blue agent's actions (the branch their train.py runs).
    config.finetune.soo_target = "hidden"
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
