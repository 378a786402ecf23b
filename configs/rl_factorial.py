"""The factorial around the paper's RL fine-tuning: SOO target x loss form x initialisation, each
SOO arm with a capability-only twin, plus a positive and an undertraining control.

python launch/rl.py --config configs/rl_factorial.py                  # every arm, resumable
python launch/rl.py --config configs/rl_factorial.py --config.stage=soo_action_logmse_scratch
python launch/rl.py --config configs/rl_factorial.py:tiny --config.workdir=/tmp/f   # smoke run
python launch/rl.py --config configs/rl_factorial.py:replicate   # the same on 8 other seeds
python launch/rl_pool.py runs/rl_factorial runs/rl_factorial_replicate --out runs/rl_factorial_pooled

Everything but the arms is configs/rl_deception.py's (same seeds, env, learner, chunking and
baseline length), so its two 40,000-episode baselines are reused from `baseline_workdir`
(checked, never modified; trained there if missing). Arms fine-tune for finetune.n_episodes
(10,000, the authors' README) on the reward they name:

- soo_<target>_<mse|logmse>_<baseline|scratch>: SOO + capability. target: "hidden" compares
  concat(h1, h2) (the authors' evaluation scripts), "action" the blue actions (their train.py);
  mse: the paper's formula, logmse: log(MSE + 1e-25) on both terms (their code); baseline: start
  from the deceptive baseline, scratch: fresh networks (their README command has no --load).
- cap_<mse|logmse>_<baseline|scratch>: the capability-only twin of the two SOO arms with the same
  loss form and init (same key stream: same fresh networks, resets, noise and minibatches), so
  the SOO effect is a paired difference per seed.
- honest_finetune: the deceptive baseline fine-tuned on the honest reward with no extra loss
  (what moving toward honest looks like in 10,000 episodes).
- scratch_deceptive: fresh networks, 10,000 episodes of the deceptive reward, no extra loss (what
  a from-scratch arm looks like without SOO: undertrained).

Every arm is on key stream 1, the stream of configs/rl_deception.py's soo and capability stages:
soo_hidden_mse_baseline and cap_mse_baseline are those stages bit for bit, and all arms of a
seed see the same resets, exploration noise and minibatch indices (common random numbers).

`:replicate` runs the same design on 8 other training seeds (`REPLICATE_SEEDS`), with its own
baselines (`runs/rl_deception_replicate`) and workdir (`runs/rl_factorial_replicate`);
launch/rl_pool.py pools the two evaluations into one 16-seed result.

The values are `soo_jax.rl.config.factorial_config()`'s.
"""

from ml_collections import ConfigDict

from soo_jax.rl import config as config_lib


def get_config(variant: str = "") -> ConfigDict:
    """`variant="tiny"` (`--config configs/rl_factorial.py:tiny`): configs/rl_tiny.py's sizes, for
    tests and smoke runs; "replicate": the design on REPLICATE_SEEDS; "tiny_replicate": both."""
    variants = ("", "tiny", "replicate", "tiny_replicate")
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r}; one of {variants}")
    return config_lib.factorial_config(tiny="tiny" in variant, replicate="replicate" in variant)
