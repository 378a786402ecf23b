"""Compile time of the SOO train step and of generation: layers unrolled vs scanned (vs scanned
with remat), ahead of time on abstract weights (nothing is loaded; the seconds are XLA's).

    python -m benchmarks.compile --arch smollm2                    # CPU, one device, fp32
    python -m benchmarks.compile --arch mistral-7b --devices 8     # bf16, 8 simulated CPU devices
    python -m benchmarks.compile --table docs/compile_times.jsonl  # markdown table of the results

Train step: the trainer's own jit (`jit_train_step` with its shardings) lowered and compiled on
`jax.ShapeDtypeStruct` arguments, as `benchmarks/scale_plan.py` does: SmolLM2 with the main
job's recipe (configs/smollm2.py, SOO layer 19 of 30) on one device, Mistral-7B with the paper's
(configs/mistral.py, layer 19 of 32) on each --meshes mesh. Generation: `generate_tokens`'
jitted prefill + decode loop for one batch (32 prompts x 144 tokens, 75 new tokens, greedy), one
device. Each row is a fresh trace and compile (no compilation cache). Rows are appended to --out
as they finish; rows already there are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks.loadavg import load_average, load_line  # noqa: E402

LOOPS = {"unrolled": (False, "none"), "scan": (True, "none"), "scan + remat full": (True, "full")}


def arch_setup(arch: str, num_layers: int | None):
    """(model config, run recipe, dtype) of an architecture; `num_layers` cuts the model (tests)."""
    import dataclasses

    from soo_jax.train import config as run_config

    if arch == "smollm2":
        from configs.smollm2 import get_config
        from soo_jax.models.loader import load_config, resolve_model_path

        config, recipe, dtype = load_config(resolve_model_path("embedded")), get_config(), "float32"
    elif arch == "mistral-7b":
        from configs.paper_recipes import paper_config
        from soo_jax.models.shapes import model_config

        config, recipe, dtype = model_config("mistral-7b"), paper_config("mistral-7b"), "bfloat16"
    else:  # a two-layer Mistral for the tests
        from configs.paper_recipes import paper_config
        from soo_jax.models.shapes import model_config

        config = model_config("mistral-7b").replace(hidden_size=64, intermediate_size=128, num_heads=4,
                                                   num_kv_heads=2, head_dim=16, vocab_size=256)
        recipe, dtype, num_layers = paper_config("mistral-7b"), "float32", num_layers or 2
    loss = run_config.loss_config(recipe)
    if num_layers:
        config = config.replace(num_layers=num_layers, sliding_windows=config.sliding_windows[:num_layers])
        loss = dataclasses.replace(loss, layers=(min(loss.layers[0], num_layers - 1),))
    return config, recipe, loss, dtype


def step_row(arch: str, mesh_text: str, loop: str, pairs_per_shard: int, seq_len: int,
             num_layers: int | None) -> dict:
    import jax

    from benchmarks.scale_plan import abstract_step, lower_and_compile, memory_sizes
    from soo_jax.train.mesh import MeshConfig, make_mesh

    config, recipe, loss, dtype = arch_setup(arch, num_layers)
    data, fsdp, tensor = (int(x) for x in mesh_text.split("x"))
    mesh = make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor), jax.devices()[:data * fsdp * tensor])
    scan_layers, remat = LOOPS[loop]
    jitted, args, *_ = abstract_step(config, recipe, loss, mesh, global_pairs=pairs_per_shard * data * fsdp,
                                     seq_len=seq_len, dtype=dtype, scan_layers=scan_layers, remat=remat)
    compiled, lower_s, compile_s = lower_and_compile(jitted, args, mesh)
    sizes = memory_sizes(compiled)
    return {"what": "train step", "mesh": mesh_text, "soo_layer": loss.layers[0],
            "batch": f"{pairs_per_shard * data * fsdp} pairs x {seq_len}",
            "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2),
            "temp_gib": sizes["temp"] / 2**30, "total_gib": sizes["total"] / 2**30}


def generate_row(arch: str, loop: str, batch: int, prompt_len: int, new_tokens: int,
                 num_layers: int | None) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from soo_jax.models import build_model
    from soo_jax.models.generate import SamplingConfig, generate_jit

    config, _, _, dtype = arch_setup(arch, num_layers)
    scan_layers, remat = LOOPS[loop]
    dtype = jnp.dtype(dtype)
    model = nnx.eval_shape(lambda: build_model(config, dtype=dtype, rngs=nnx.Rngs(0), scan_layers=scan_layers,
                                               remat=remat))
    graphdef, state = nnx.split(model)
    ints = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
    args = (graphdef, state, ints(0), ints(batch, prompt_len), jax.ShapeDtypeStruct((batch, prompt_len), bool),
            ints(batch, 0, 0), jax.random.key(0))
    sampling = SamplingConfig(max_new_tokens=new_tokens)
    started = time.perf_counter()
    lowered = generate_jit.lower(*args, sampling=sampling, cache_dtype=dtype, pad_id=0)
    lower_s = time.perf_counter() - started
    started = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - started
    return {"what": "generate", "mesh": "1 device", "batch": f"{batch} x {prompt_len} + {new_tokens} new",
            "lower_s": round(lower_s, 2), "compile_s": round(compile_s, 2)}


def markdown_table(results: list[dict]) -> str:
    lines = ["| model | what | mesh d×f×t | batch | layer loop | lower (s) | compile (s) | **lower + compile (s)** "
             "| temp / device (GiB) | load (1 min) |", "|" + "---|" * 10]
    for r in results:
        temp = f"{r['temp_gib']:.2f}" if "temp_gib" in r else "–"
        lines.append(f"| {r['arch']} | {r['what']} | {r['mesh']} | {r['batch']} | {r['loop']} | {r['lower_s']:.1f} | "
                     f"{r['compile_s']:.1f} | **{r['lower_s'] + r['compile_s']:.1f}** | {temp} | "
                     f"{r['load_before']:.1f} |")
    return "\n".join(lines)


def read_results(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["smollm2", "mistral-7b", "mistral-tiny"], default="smollm2")
    parser.add_argument("--devices", type=int, default=1, help="simulated CPU devices")
    parser.add_argument("--meshes", nargs="*", default=None,
                        help="train-step meshes DATAxFSDPxTENSOR (default: 1x1x1, or 1x1x8 and 1x8x1 with 8 devices)")
    parser.add_argument("--loops", nargs="*", default=list(LOOPS), choices=list(LOOPS))
    parser.add_argument("--what", nargs="*", default=["train step", "generate"], choices=["train step", "generate"])
    parser.add_argument("--pairs-per-shard", type=int, default=None,
                        help="pairs per batch shard (default: 4 for smollm2, 2 for mistral-7b)")
    parser.add_argument("--seq-len", type=int, default=None, help="default 64 for smollm2, 128 for mistral-7b")
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--gen-prompt", type=int, default=144)
    parser.add_argument("--gen-new", type=int, default=75)
    parser.add_argument("--num-layers", type=int, default=None, help="cut the model to N layers (tests)")
    parser.add_argument("--out", type=pathlib.Path, default=REPO_ROOT / "docs" / "compile_times.jsonl")
    parser.add_argument("--table", type=pathlib.Path, help="print the markdown table of a results file and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(read_results(args.table)))
        return
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    meshes = args.meshes or (["1x1x8", "1x8x1"] if args.devices >= 8 else ["1x1x1"])
    pairs = args.pairs_per_shard or (4 if args.arch == "smollm2" else 2)
    seq_len = args.seq_len or (64 if args.arch == "smollm2" else 128)

    import jax

    done = {(r["arch"], r["what"], r["mesh"], r["batch"], r["loop"], r.get("num_layers")) for r in read_results(args.out)}
    load_at_start = load_average()
    jobs = [("train step", mesh) for mesh in meshes] if "train step" in args.what else []
    jobs += [("generate", "1 device")] if "generate" in args.what else []
    for what, mesh in jobs:
        for loop in args.loops:
            batch = (f"{pairs * _shards(mesh)} pairs x {seq_len}" if what == "train step"
                     else f"{args.gen_batch} x {args.gen_prompt} + {args.gen_new} new")
            if (args.arch, what, mesh, batch, loop, args.num_layers) in done:
                print(f"{args.arch} {what} {mesh} {loop}: already in {args.out}", flush=True)
                continue
            load_before = load_average()
            if what == "train step":
                row = step_row(args.arch, mesh, loop, pairs, seq_len, args.num_layers)
            else:
                row = generate_row(args.arch, loop, args.gen_batch, args.gen_prompt, args.gen_new, args.num_layers)
            row.update(arch=args.arch, loop=loop, num_layers=args.num_layers, load_before=load_before,
                       date=time.strftime("%Y-%m-%d"), jax=jax.__version__, backend=jax.default_backend(),
                       cpus=os.cpu_count())
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{args.arch} {what} {mesh} {loop}: lower {row['lower_s']} s + compile {row['compile_s']} s"
                  + (f", temp {row['temp_gib']:.2f} GiB/device" if "temp_gib" in row else ""), flush=True)
    print(load_line(load_at_start, load_average()), flush=True)


def _shards(mesh: str) -> int:
    data, fsdp, _ = (int(x) for x in mesh.split("x"))
    return data * fsdp


if __name__ == "__main__":
    main()
