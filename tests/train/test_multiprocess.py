"""Two jax processes on localhost (4 CPU devices each, one 2x2x2 mesh over all 8) run the SOO
step, each loading only its rows of the global batch, and agree with each other and with a
single-process, single-device run.

The mesh puts process 0 on data index 0, so process 0 loads rows 0-3 and process 1 rows 4-7 of
each microbatch: rows interleaved [self_0, other_0, ...] as the training loop feeds them, so each
process holds whole pairs (0-1 and 2-3), and the loss, its gradient and the update are right only
if the step combines both processes' pairs.
Tolerances as in test_sharded_step (fp32, summation order): loss rtol 1e-5, LoRA atol 1e-6.
"""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.models.hf_reference import make_tiny_checkpoint
from tests.train.distributed_common import LORA_ATOL, LORA_RTOL, LOSS_RTOL, NUM_PAIRS, REPO_ROOT, worker_env

NUM_PROCESSES = 2
TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(checkpoint, out, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.train.multiprocess_worker", str(checkpoint), str(out)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("qwen2")
    out = tmp_path_factory.mktemp("multiprocess")
    make_tiny_checkpoint("qwen2", checkpoint)
    port = free_port()
    procs = [launch(checkpoint, out, {**worker_env(4), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                      "JAX_NUM_PROCESSES": str(NUM_PROCESSES), "JAX_PROCESS_ID": str(i)})
             for i in range(NUM_PROCESSES)]
    procs.append(launch(checkpoint, out, worker_env(1)))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:  # a hung peer must not outlive the test
            if proc.poll() is None:
                proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-4000:]
    load = lambda name: (dict(np.load(out / f"{name}.npz")), json.loads((out / f"{name}.json").read_text()))
    return [load(f"process_{i}") for i in range(NUM_PROCESSES)], load("single")


def test_processes_see_one_global_mesh_and_load_disjoint_rows(results):
    processes, (_, single) = results
    assert single["process_count"] == 1 and single["devices"] == 1
    for i, (_, report) in enumerate(processes):
        assert (report["process_index"], report["process_count"]) == (i, NUM_PROCESSES)
        assert (report["local_devices"], report["devices"]) == (4, 8)
    rows = [report["rows"] for _, report in processes]
    assert rows == [list(range(NUM_PAIRS)), list(range(NUM_PAIRS, 2 * NUM_PAIRS))]  # pairs 0-1 | pairs 2-3


def test_processes_agree_with_each_other_and_with_one_process(results):
    processes, (single, _) = results
    lora = [k for k in single if k.startswith("lora:")]
    assert lora
    for arrays, _ in processes:
        np.testing.assert_allclose(arrays["loss"], single["loss"], rtol=LOSS_RTOL)
        np.testing.assert_allclose(arrays["grad_norm"], single["grad_norm"], rtol=LOSS_RTOL)
        for name in lora:
            np.testing.assert_allclose(arrays[name], single[name], atol=LORA_ATOL, rtol=LORA_RTOL, err_msg=name)
    first, second = processes[0][0], processes[1][0]
    for name in ["loss", "grad_norm", *lora]:  # one computation: bit-identical on every process
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert single["lora:layers/self_attn/q_proj/lora/b"][0].max() > 100 * LORA_ATOL


def test_arrays_are_on_their_declared_shardings_in_every_process(results):
    processes, _ = results
    for _, report in processes:
        wrong = [s for s in report["specs"] if s["actual"] != s["declared"] or not s["mesh_ok"]]
        assert not wrong, wrong[:5]
        assert {s["kind"] for s in report["specs"]} == {"frozen", "lora", "opt_state"}
