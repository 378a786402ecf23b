"""The SOO step on (data, fsdp, tensor) meshes of 8 simulated CPU devices equals the
single-device step, every array sits on the sharding its logical axes declare, and impossible
meshes and batches are refused with messages that say why.

The 8-device part runs in a subprocess (the device count is fixed when jax starts); this module
asserts on what it writes. Tolerances (fp32, see distributed_common): loss and gradient norm
rtol 1e-5, LoRA parameters atol 1e-6 / rtol 1e-5; observed ~1e-7 and ~5e-8.
"""

import json

import jax
import numpy as np
import pytest
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec

from soo_jax.train.mesh import (MeshConfig, batch_shards, check_global_batch, detect_distributed,
                                global_batch_from_host_slices, initialize_distributed, make_mesh)
from tests.models.hf_reference import make_tiny_checkpoint
from tests.train.distributed_common import (LORA_ATOL, LORA_RTOL, LOSS_RTOL, NUM_MICROBATCHES, NUM_PAIRS,
                                            run_worker, worker_env)

MESHES = ("mesh_2x2x2", "mesh_1x2x4")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("qwen2")
    out = tmp_path_factory.mktemp("sharded")
    make_tiny_checkpoint("qwen2", checkpoint)  # q/k/v biases, untied head: every kind of weight
    proc = run_worker("tests.train.sharded_step_worker", checkpoint, out, env=worker_env(8))
    assert proc.returncode == 0, proc.stderr[-4000:]
    load = lambda name: (dict(np.load(out / f"{name}.npz")), json.loads((out / f"{name}.json").read_text()))
    return {name: load(name) for name in ("reference",) + MESHES}


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_step_equals_the_single_device_step(results, mesh):
    reference, _ = results["reference"]
    sharded, _ = results[mesh]
    np.testing.assert_allclose(sharded["loss"], reference["loss"], rtol=LOSS_RTOL)
    np.testing.assert_allclose(sharded["grad_norm"], reference["grad_norm"], rtol=LOSS_RTOL)
    lora = [k for k in reference if k.startswith("lora:")]
    assert lora and set(lora) == {k for k in sharded if k.startswith("lora:")}
    for name in lora:
        np.testing.assert_allclose(sharded[name], reference[name], atol=LORA_ATOL, rtol=LORA_RTOL, err_msg=name)
    # The train state holds each LoRA variable as the model stacks it ([layers, ...]).
    # The comparison means something only if training moved the adapters well beyond the tolerance:
    # B starts at zero, and two Adam steps of 1e-3 move it ~2e-3 where the loss reaches it.
    assert reference["lora:layers/self_attn/q_proj/lora/b"][0].max() > 100 * LORA_ATOL


@pytest.mark.parametrize("mesh", MESHES)
def test_every_array_is_on_its_declared_sharding(results, mesh):
    _, report = results[mesh]
    specs = report["specs"]
    wrong = [s for s in specs if s["actual"] != s["declared"] or not s["mesh_ok"]]
    assert not wrong, wrong[:5]
    kinds = {kind: [s for s in specs if s["kind"] == kind] for kind in ("frozen", "lora", "opt_state")}
    num_lora = len(kinds["lora"])
    assert num_lora == 2 * 2  # (q_proj, v_proj) x (a, b), each stacked over the 3 layers
    moments = [s for s in kinds["opt_state"] if s["declared"]]
    assert len(moments) >= 2 * num_lora  # Adam's mu and nu for every LoRA parameter
    assert report["batch_spec"] == [None, ["data", "fsdp"]]  # microbatch axis whole, rows over data x fsdp

    # The declarations themselves, written out, so a wrong rule would fail here too. The decoder
    # layers are stacked [L, ...]; their leading "layers" axis is whole on every device.
    by_name = {s["name"]: s["actual"] for s in specs}
    assert by_name["layers/self_attn/q_proj/kernel"] == [None, "fsdp", "tensor"]
    assert by_name["layers/self_attn/q_proj/bias"] == [None, "tensor"]
    assert by_name["layers/self_attn/o_proj/kernel"] == [None, "tensor", "fsdp"]
    assert by_name["layers/mlp/down_proj/kernel"] == [None, "tensor", "fsdp"]
    assert by_name["layers/input_layernorm/scale"] == []
    # vocab 97 divides by no axis: the vocabulary dimension stays whole, the width is split.
    assert by_name["embed_tokens/embedding"] == [None, "fsdp"]
    assert by_name["lm_head/kernel"] == ["fsdp"]
    assert by_name["layers/self_attn/v_proj/lora/a"] == [None, "fsdp"]
    assert by_name["layers/self_attn/v_proj/lora/b"] == [None, None, "tensor"]
    mu_b = [s for s in moments if "layers/self_attn/v_proj/lora/b" in s["name"]]
    assert mu_b and all(s["actual"] == [None, None, "tensor"] for s in mu_b)
    assert all(s["actual"] == [] for s in kinds["opt_state"] if not s["declared"])  # step counts


@pytest.mark.parametrize("mesh", MESHES)
def test_loader_places_weights_on_their_declared_shardings(results, mesh):
    _, report = results[mesh]
    frozen = [s for s in report["specs"] if s["kind"] == "frozen"]
    # stacked layers: (q, k, v kernels and biases, o, gate, up, down, 2 norms) + embedding, final norm, head
    assert len(frozen) == 12 + 3
    assert all(s["actual"] == s["declared"] and s["mesh_ok"] for s in frozen)
    stacked = [s for s in frozen if s["name"].startswith("layers/")]
    assert all(s["shape"][0] == 3 for s in stacked)  # [L, ...]
    # sharded, not silently replicated: all but the two stacked norms and the final norm
    assert sum(s["actual"] != [] for s in frozen) == 12
    assert report["loaded_weights_equal"]


# --- Impossible meshes and batches (no devices needed) ---------------------------------------

@pytest.mark.parametrize("config, devices, message", [
    (MeshConfig(data=2, fsdp=2, tensor=2), 16, "has 8 devices but there are 16"),
    (MeshConfig(data=3, fsdp=-1, tensor=1), 8, "fixed axes multiply to 3, which does not divide 8"),
    (MeshConfig(data=1, fsdp=4, tensor=4), 8, "(data=1, fsdp=4, tensor=4) has 16 devices"),
])
def test_meshes_that_cannot_tile_the_devices_are_refused(config, devices, message):
    with pytest.raises(ValueError, match="mesh") as error:
        config.resolve(devices)
    assert message in str(error.value)


@pytest.mark.parametrize("sizes, message", [
    (dict(data=0, fsdp=8, tensor=1), "must be positive"),
    (dict(data=2, fsdp=4, tensor=-2), "must be positive"),
    (dict(data=-1, fsdp=-1, tensor=2), "at most one mesh axis may be -1"),
])
def test_bad_axis_sizes_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message) as error:
        MeshConfig(**sizes)
    assert "data=" in str(error.value)  # the message shows the sizes it refused


def test_minus_one_takes_the_remaining_devices():
    assert MeshConfig(data=2, fsdp=-1, tensor=4).resolve(256) == {"data": 2, "fsdp": 32, "tensor": 4}
    assert MeshConfig().resolve(8) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert MeshConfig(data=8, fsdp=1, tensor=1).resolve(8) == {"data": 8, "fsdp": 1, "tensor": 1}


def test_make_mesh_uses_auto_axes_and_names_the_device_count():
    mesh = make_mesh(MeshConfig())  # this pytest process has one CPU device
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    assert all(t.name == "Auto" for t in mesh.axis_types)
    with pytest.raises(ValueError, match="has 2 devices but there are 1"):
        make_mesh(MeshConfig(data=2, fsdp=1, tensor=1))


def test_global_batches_that_do_not_split_over_data_x_fsdp_are_refused():
    mesh = AbstractMesh((2, 4, 2), ("data", "fsdp", "tensor"))
    assert batch_shards(mesh) == 8
    check_global_batch(mesh, 4)  # 8 rows over 8 shards
    check_global_batch(mesh, 12)
    for pairs in (1, 3, 6):
        with pytest.raises(ValueError, match=rf"{pairs} pairs \({2 * pairs} rows\) cannot be split over the 8"):
            check_global_batch(mesh, pairs)
    with pytest.raises(ValueError, match="at least one pair"):
        check_global_batch(mesh, 0)
    assert batch_shards(AbstractMesh((1, 1, 8), ("data", "fsdp", "tensor"))) == 1


def test_host_slices_with_the_wrong_row_count_are_refused():
    sharding = NamedSharding(make_mesh(MeshConfig()), PartitionSpec(None, ("data", "fsdp")))
    tokens = np.ones((NUM_MICROBATCHES, 2 * NUM_PAIRS, 5), np.int32)
    global_tokens, global_mask = global_batch_from_host_slices(tokens, tokens, sharding)
    assert global_tokens.shape == tokens.shape and global_tokens.sharding == sharding
    with pytest.raises(ValueError, match="should load 16 rows, but it got 8"):
        global_batch_from_host_slices(tokens, tokens, sharding, global_rows=16)
    with pytest.raises(ValueError, match="differ in shape"):
        global_batch_from_host_slices(tokens, tokens[:, :4], sharding)


# --- Multi-process detection (pure functions of the environment) ------------------------------

def test_a_lone_process_is_not_distributed():
    assert detect_distributed({}, on_tpu_vm=False) is None
    assert detect_distributed({"JAX_NUM_PROCESSES": "1"}, on_tpu_vm=False) is None
    assert detect_distributed({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}, on_tpu_vm=False) is None
    assert initialize_distributed({}) is None  # a no-op here: nothing was initialised

    assert not jax.distributed.is_initialized()


def test_launchers_are_detected():
    explicit = detect_distributed({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4",
                                   "JAX_PROCESS_ID": "3"}, on_tpu_vm=False)
    assert (explicit.method, explicit.coordinator_address, explicit.num_processes, explicit.process_id) == (
        "explicit", "10.0.0.1:1234", 4, 3)
    assert detect_distributed({"SLURM_NTASKS": "16"}, on_tpu_vm=False).method == "slurm"
    assert detect_distributed({"OMPI_COMM_WORLD_SIZE": "2"}, on_tpu_vm=False).method == "ompi"
    assert detect_distributed({}, on_tpu_vm=True).method == "tpu"


@pytest.mark.parametrize("environ, message", [
    ({"JAX_NUM_PROCESSES": "2"}, "also needs JAX_COORDINATOR_ADDRESS"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "2"}, "outside 0..1"),
    ({"JAX_NUM_PROCESSES": "two"}, "not an integer"),
    ({"JAX_NUM_PROCESSES": "0"}, ">= 1"),
])
def test_incomplete_launch_variables_are_refused(environ, message):
    with pytest.raises(ValueError, match=message):
        detect_distributed(environ, on_tpu_vm=False)
