"""One process of a multi-process SOO step on localhost, or the single-process reference.

    # each of N processes (4 CPU devices each), launched with
    #   JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i
    #   XLA_FLAGS=--xla_force_host_platform_device_count=4
    python -m tests.train.multiprocess_worker CHECKPOINT_DIR OUT_DIR

Without JAX_NUM_PROCESSES it is the single-process, single-device reference. Every process
builds the same global pair batch (rows interleaved [self_0, other_0, ...]) but loads only its
own rows of it; the (data=2, fsdp=2, tensor=2) mesh puts process 0's devices on data index 0, so
process 0 holds the first half of the rows (pairs 0 and 1) and process 1 the second (pairs 2 and
3), and the step must combine the pairs of both processes.
Writes OUT_DIR/process_<i>.{npz,json} (the reference: OUT_DIR/single.{npz,json}).
"""

from __future__ import annotations

import sys

from soo_jax.train.mesh import (MeshConfig, global_batch_from_host_slices, initialize_distributed, make_mesh,
                                process_batch_rows)

# Before anything else touches jax: distributed start-up must precede backend start-up.
DISTRIBUTED = initialize_distributed()
assert initialize_distributed() == DISTRIBUTED  # a second call is a no-op

import jax  # noqa: E402

from soo_jax.models.loader import from_pretrained  # noqa: E402
from soo_jax.train.step import init_train_state, jit_train_step, plan_shardings  # noqa: E402
from tests.train import distributed_common as common  # noqa: E402


def main(checkpoint: str, out_dir: str) -> None:
    sharded = DISTRIBUTED is not None
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)) if sharded else None
    model = from_pretrained(checkpoint, mesh=mesh)
    tokens, mask = common.pair_batch(model.config.vocab_size)
    split, optimizer, step_fn = common.trainer(model)
    state = init_train_state(split, optimizer)
    report = {"process_index": jax.process_index(), "process_count": jax.process_count(),
              "local_devices": jax.local_device_count(), "devices": jax.device_count()}
    if sharded:
        shardings = plan_shardings(split, optimizer, mesh)
        state = jax.device_put(state, shardings.state)
        rows = process_batch_rows(shardings.batch, tokens.shape)
        batch = global_batch_from_host_slices(tokens[:, rows], mask[:, rows], shardings.batch,
                                              global_rows=tokens.shape[1])
        step = jit_train_step(step_fn, shardings)
        report["rows"] = rows.tolist()
        report["specs"] = (common.frozen_spec_report(split.frozen, mesh))
    else:
        batch, step = (tokens, mask), jax.jit(step_fn)
    losses, grad_norms = [], []
    for _ in range(common.NUM_STEPS):
        state, metrics = step(split.frozen, state, *batch)
        losses.append(float(metrics["loss"]))
        grad_norms.append(float(metrics["grad_norm"]))
    if sharded:
        report["specs"] += common.state_spec_report(split, state, mesh)
    name = f"process_{jax.process_index()}" if sharded else "single"
    common.save(out_dir, name, common.result_arrays(state, losses, grad_norms), report)


if __name__ == "__main__":
    main(*sys.argv[1:])
