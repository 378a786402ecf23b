"""What the distributed test workers share: one training recipe, one pair batch, and a report of
every trained array's sharding next to the sharding its logical axes declare.

The workers run in subprocesses (the device count is fixed when jax starts), so they write their
results to a file and the pytest side asserts on it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, PartitionSpec

from soo_jax.lora import LoRAConfig, apply_lora
from soo_jax.sharding import DEFAULT_RULES, logical_to_spec, variable_logical_axes
from soo_jax.soo import LossConfig
from soo_jax.train.step import OptimizerConfig, SplitModel, make_optimizer, make_train_step

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# fp32 tolerances: a sharded forward splits matmul contractions over fsdp/tensor and sums the
# partial products in another order, which moves the loss by ~1e-7 relative and the LoRA
# parameters by ~5e-8 after two Adam steps that move them by ~1e-3.
LOSS_RTOL = 1e-5
LORA_ATOL, LORA_RTOL = 1e-6, 1e-5

SOO_LAYER = 1  # of the tiny model's 3: the forward stops here, layer 2 is never run
# Dropout on: sharded and unsharded runs must draw the same masks (threefry is partitionable).
LORA = LoRAConfig(rank=4, alpha=8, dropout=0.1)
LORA_SEED = 1
LOSS = LossConfig(layers=(SOO_LAYER,))
OPTIMIZER = OptimizerConfig(learning_rate=1e-3, total_steps=10)
NUM_STEPS = 2  # the second step has non-zero gradients for A (B is zero before the first)
NUM_MICROBATCHES = 2
NUM_PAIRS = 4  # per microbatch: 8 rows, so a 4-way batch split gives every shard one whole pair


def pair_batch(vocab_size: int, num_micro: int = NUM_MICROBATCHES, num_pairs: int = NUM_PAIRS,
               width: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """tokens/mask [A, 2B, T], rows interleaved [self_0, other_0, self_1, ...] as the training loop
    feeds them (`soo_jax.data.batching.PairBatch`), left-padded, the other prompt differing from
    its self prompt in its first token and sometimes by one extra token."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((num_micro, 2 * num_pairs, width), np.int32)
    mask = np.zeros_like(tokens)
    for a in range(num_micro):
        for i in range(num_pairs):
            n = int(rng.integers(4, width))
            self_ids = rng.integers(1, vocab_size, n)
            other_ids = self_ids.copy()
            other_ids[0] = other_ids[0] % (vocab_size - 1) + 1
            if i % 2:
                other_ids = np.concatenate([other_ids, [3]])
            for row, ids in ((2 * i, self_ids), (2 * i + 1, other_ids)):
                tokens[a, row, width - len(ids):] = ids
                mask[a, row, width - len(ids):] = 1
    return tokens, mask


def trainer(model):
    """(split, optimizer, step function) for `model`, LoRA attached with a fixed seed."""
    # A "dropout" stream, so that the step's nnx.reseed(model, dropout=...) reaches the LoRA
    # dropouts and every step and microbatch draws its own masks (with only a default stream
    # the masks would be the same at every step; see the report on soo_jax/lora.py).
    # Seed 1, not 0: with the stacked layers' draws, seed 0 gives two elements of layer 0's v_proj
    # A a second-step gradient of ~1e-8 (Adam's eps) after cancellation, where Adam's per-element
    # normalisation turns the summation-order differences of a sharded matmul (~1e-10 there) into
    # 2e-6 of parameter, beyond LORA_ATOL; seeds 1 and 2 agree to 6e-8 and 2e-8 (measured).
    apply_lora(model, LORA, rngs=nnx.Rngs(params=LORA_SEED, dropout=LORA_SEED))
    split = SplitModel(model)
    optimizer = make_optimizer(OPTIMIZER)
    return split, optimizer, make_train_step(split, LOSS, optimizer)


def spec_tuple(spec: PartitionSpec) -> list:
    """A PartitionSpec as JSON: trailing replicated dims dropped, 1-axis tuples unwrapped, so that
    equivalent specs compare equal (P('fsdp', None) == P('fsdp'))."""
    out = []
    for entry in spec:
        if isinstance(entry, (tuple, list)):
            entry = list(entry) if len(entry) > 1 else (entry[0] if entry else None)
        out.append(entry)
    while out and out[-1] is None:
        out.pop()
    return out


def frozen_spec_report(frozen, mesh: Mesh) -> list[dict]:
    rows = []
    for path, var in nnx.to_flat_state(frozen):
        value = var.get_value()
        declared = logical_to_spec(variable_logical_axes(var), DEFAULT_RULES, mesh, value.shape)
        rows.append({"kind": "frozen", "name": "/".join(map(str, path)), "shape": list(value.shape),
                     "actual": spec_tuple(value.sharding.spec), "declared": spec_tuple(declared),
                     "mesh_ok": value.sharding.mesh == mesh})
    return rows


def state_spec_report(split: SplitModel, state, mesh: Mesh) -> list[dict]:
    """LoRA params and every optimizer leaf: moments must be sharded like their parameter,
    scalars (counts) replicated."""
    axes = split.lora_logical_axes()
    declared = {name: logical_to_spec(axes[name], DEFAULT_RULES, mesh, value.shape)
                for name, value in state.lora.items()}
    rows = [{"kind": "lora", "name": name, "actual": spec_tuple(value.sharding.spec),
             "declared": spec_tuple(declared[name]), "mesh_ok": value.sharding.mesh == mesh}
            for name, value in state.lora.items()]
    for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
        keys = [getattr(k, "key", None) for k in path]
        param = next((k for k in keys if k in declared), None)
        rows.append({"kind": "opt_state", "name": jax.tree_util.keystr(path),
                     "actual": spec_tuple(leaf.sharding.spec),
                     "declared": spec_tuple(declared[param]) if param else [],
                     "mesh_ok": leaf.sharding.mesh == mesh})
    return rows


def save(out_dir: str | pathlib.Path, name: str, arrays: dict[str, np.ndarray], report: dict) -> None:
    out_dir = pathlib.Path(out_dir)
    np.savez(out_dir / f"{name}.npz", **arrays)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=1))


def to_host(x: jax.Array) -> np.ndarray:
    """The whole array on this host, gathering other processes' shards when there are any."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def result_arrays(state, losses, grad_norms) -> dict[str, np.ndarray]:
    arrays = {f"lora:{k}": to_host(v) for k, v in state.lora.items()}
    arrays["loss"] = np.asarray(losses)
    arrays["grad_norm"] = np.asarray(grad_norms)
    return arrays


def worker_env(device_count: int) -> dict:
    """The environment of a worker subprocess with `device_count` simulated CPU devices and no
    inherited launcher variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "XLA_"))}
    # LLVM optimisation level 0 cuts the CPU compile time ~4x; every run a test compares uses
    # the same flags, so it changes nothing the tests check.
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={device_count} --xla_backend_optimization_level=0")
    return env


def run_worker(module: str, *args, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
