"""Runs the SOO step unsharded and on (data, fsdp, tensor) meshes of 8 simulated CPU devices.

Usage (the device count must be set before jax starts):
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python -m tests.train.sharded_step_worker CHECKPOINT_DIR OUT_DIR

Writes OUT_DIR/reference.{npz,json} and OUT_DIR/mesh_<d>x<f>x<t>.{npz,json}: losses, gradient
norms and LoRA parameters after NUM_STEPS steps, plus the sharding report of every frozen weight
(as the loader placed it), LoRA parameter and optimizer leaf (as the step returned them).
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from flax import nnx

from soo_jax.models.loader import from_pretrained
from soo_jax.train.mesh import MeshConfig, global_batch_from_host_slices, make_mesh, process_batch_rows
from soo_jax.train.step import init_train_state, jit_train_step, plan_shardings
from tests.train import distributed_common as common

MESHES = (MeshConfig(data=2, fsdp=2, tensor=2), MeshConfig(data=1, fsdp=2, tensor=4))


def train(step, frozen, state, tokens, mask):
    losses, grad_norms = [], []
    for _ in range(common.NUM_STEPS):
        state, metrics = step(frozen, state, tokens, mask)
        losses.append(float(metrics["loss"]))
        grad_norms.append(float(metrics["grad_norm"]))
    return state, losses, grad_norms


def main(checkpoint: str, out_dir: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    reference_model = from_pretrained(checkpoint)
    reference_weights = {"/".join(map(str, p)): np.asarray(v.get_value())
                         for p, v in nnx.to_flat_state(nnx.state(reference_model))}
    tokens, mask = common.pair_batch(reference_model.config.vocab_size)

    split, optimizer, step_fn = common.trainer(reference_model)
    state, losses, grad_norms = train(jax.jit(step_fn), split.frozen, init_train_state(split, optimizer),
                                      tokens, mask)
    common.save(out_dir, "reference", common.result_arrays(state, losses, grad_norms), {})

    for mesh_config in MESHES:
        mesh = make_mesh(mesh_config)
        model = from_pretrained(checkpoint, mesh=mesh)
        report = common.frozen_spec_report(nnx.state(model), mesh)
        weights_equal = all(
            np.array_equal(np.asarray(v.get_value()), reference_weights["/".join(map(str, p))])
            for p, v in nnx.to_flat_state(nnx.state(model)))

        split, optimizer, step_fn = common.trainer(model)
        shardings = plan_shardings(split, optimizer, mesh)
        state = jax.device_put(init_train_state(split, optimizer), shardings.state)
        rows = process_batch_rows(shardings.batch, tokens.shape)
        batch = global_batch_from_host_slices(tokens[:, rows], mask[:, rows], shardings.batch)
        state, losses, grad_norms = train(jit_train_step(step_fn, shardings), split.frozen, state, *batch)
        report += common.state_spec_report(split, state, mesh)
        name = "mesh_{data}x{fsdp}x{tensor}".format(**mesh_config.sizes())
        common.save(out_dir, name, common.result_arrays(state, losses, grad_norms),
                    {"specs": report, "loaded_weights_equal": weights_equal,
                     "batch_spec": common.spec_tuple(batch[0].sharding.spec)})


if __name__ == "__main__":
    main(*sys.argv[1:])
