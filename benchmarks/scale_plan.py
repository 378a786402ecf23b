"""Ahead-of-time memory plan of the SOO train step on simulated device meshes.

For each (model, mesh, batch) row: build the model abstractly (`nnx.eval_shape`: shapes, dtypes
and logical axes, no weights), attach LoRA, split it as the trainer does, give every step input a
`jax.ShapeDtypeStruct` carrying its NamedSharding, and compile the very jit the trainer runs:
`jit_train_step(step, plan_shardings(...)).lower(*abstract_args).compile()`. The compiled
executable's `memory_analysis()` is per device.

    python -m benchmarks.scale_plan --devices 256 --rows calmerys-78b:1x16x4 --out docs/scale_plan.jsonl
    python -m benchmarks.scale_plan --table docs/scale_plan.jsonl    # markdown table of the results

The device count must be fixed before jax starts, so this script sets XLA_FLAGS itself; meshes
smaller than --devices use the first devices. Rows are appended to --out as they finish, so a
long run can be stopped and resumed (rows already in the file are skipped).

Caveat: the devices are CPU devices. Argument and output sizes are exact for any backend (they are
the sharded inputs); temp and code sizes come from the XLA CPU compiler's buffer assignment and
fusion, which differ from TPU/GPU (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

from benchmarks.loadavg import load_average, load_line  # noqa: E402
GIB = 1024 ** 3
DEVICE_MEMORY_GIB = {"16 GiB (v5e)": 16, "32 GiB (v4)": 32, "80 GiB (H100)": 80}

# model:DATAxFSDPxTENSOR, the rows of docs/scaling.md.
DEFAULT_ROWS = (
    "mistral-7b:1x32x1", "mistral-7b:4x8x1", "mistral-7b:2x4x4",
    "gemma-2-27b:1x32x1", "gemma-2-27b:1x8x4", "gemma-2-27b:2x16x2",
    "calmerys-78b:1x64x1", "calmerys-78b:1x16x4", "calmerys-78b:1x8x8", "calmerys-78b:2x32x4",
)


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    data: int
    fsdp: int
    tensor: int
    pairs_per_shard: int = 2  # pairs per batch shard (data x fsdp index) per microbatch
    seq_len: int = 128
    microbatches: int = 1
    constrain: bool = True  # residual stream pinned to the batch sharding (now always, in CausalLM)
    topology: str | None = None  # a TPU topology ("v5e:8x8") compiled for by libtpu, or CPU devices
    truncate_layers: int | None = None  # keep this many layers, SOO at the last (per-layer slopes)
    # The layer loop (soo_jax.models.transformer): rows before issue 16 were all "unrolled".
    layer_loop: str = "scan"  # "scan" | "unrolled"
    remat: str = "none"
    # XLA:CPU upcasts bf16 dot operands to f32 and, in a scan, hoists that convert of the whole
    # weight stack out of the loop: an f32 copy of every layer's weights in temp that a TPU/GPU
    # (native bf16 dots) never makes. False compiles without that pass (planning only).
    cpu_licm: bool = True

    @classmethod
    def parse(cls, text: str, **defaults) -> "Row":
        model, mesh = text.split(":")
        data, fsdp, tensor = (int(x) for x in mesh.split("x"))
        return cls(model, data, fsdp, tensor, **defaults)

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.tensor

    @property
    def global_pairs(self) -> int:
        return self.pairs_per_shard * self.data * self.fsdp

    def key(self) -> str:
        return (f"{self.model}:{self.data}x{self.fsdp}x{self.tensor}:p{self.pairs_per_shard}"
                f":t{self.seq_len}:a{self.microbatches}" + (":constrained" if self.constrain else "")
                + (f":{self.topology}" if self.topology else "")
                + (f":layers{self.truncate_layers}" if self.truncate_layers else "")
                + ("" if self.layer_loop == "unrolled" else f":{self.layer_loop}")
                + ("" if self.remat == "none" else f":remat_{self.remat}")
                + ("" if self.cpu_licm else ":nolicm"))


def abstract_step(config, recipe, loss, mesh, *, global_pairs: int, seq_len: int, microbatches: int = 1,
                  dtype="bfloat16", scan_layers: bool = True, remat: str = "none"):
    """The trainer's jitted step and abstract arguments (`jax.ShapeDtypeStruct`s carrying their
    NamedShardings) for a model of `config` with no weights: (jitted step, args, split, frozen, state)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from soo_jax.lora import apply_lora
    from soo_jax.models import build_model
    from soo_jax.train import config as run_config
    from soo_jax.train.step import (SplitModel, TrainState, jit_train_step, make_optimizer, make_train_step,
                                    plan_shardings)

    dtype = jnp.dtype(dtype)

    def abstract_model():
        return build_model(config, dtype=dtype, param_dtype=dtype, rngs=nnx.Rngs(0), scan_layers=scan_layers,
                           remat=remat)

    # The base is abstract (no weights); the adapters are small and made for real, with a
    # "dropout" stream so that the step's reseed replaces their RNG state with traced keys.
    model = apply_lora(nnx.eval_shape(abstract_model), run_config.lora_config(recipe),
                       rngs=nnx.Rngs(params=1, dropout=2))
    split = SplitModel(model)
    optimizer = make_optimizer(run_config.optimizer_config(recipe, total_steps=100))
    shardings = plan_shardings(split, optimizer, mesh)
    step = make_train_step(split, loss, optimizer)

    def placed(x, sharding):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    frozen = jax.tree.map(lambda v, s: v.replace(placed(v.get_value(), s)), split.frozen, shardings.frozen,
                          is_leaf=lambda x: isinstance(x, nnx.Variable))
    lora_params = {k: placed(v, shardings.state.lora[k]) for k, v in split.initial_lora.items()}
    opt_state = jax.tree.map(placed, jax.eval_shape(optimizer.init, lora_params), shardings.state.opt_state)
    state = TrainState(step=placed(jax.ShapeDtypeStruct((), jnp.int32), shardings.state.step),
                       lora=lora_params, opt_state=opt_state,
                       dropout_key=placed(jax.ShapeDtypeStruct((2,), jnp.uint32), shardings.state.dropout_key))
    batch = jax.ShapeDtypeStruct((microbatches, 2 * global_pairs, seq_len), jnp.int32, sharding=shardings.batch)
    return jit_train_step(step, shardings), (frozen, state, batch, batch), split, frozen, state


def lower_and_compile(jitted, args, mesh) -> tuple:
    """(compiled, lower seconds, compile seconds) of `jitted` on abstract `args` under `mesh`."""
    import jax

    started = time.perf_counter()
    with jax.set_mesh(mesh):
        lowered = jitted.lower(*args)
    lower_s = time.perf_counter() - started
    started = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lower_s, time.perf_counter() - started


def memory_sizes(compiled) -> dict:
    """Per-device bytes of a compiled executable, and their total (argument + output - aliased
    + temp + code)."""
    memory = compiled.memory_analysis()
    sizes = {name: int(getattr(memory, f"{name}_size_in_bytes")) for name in
             ("argument", "output", "alias", "temp", "generated_code")}
    sizes["total"] = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"] + sizes["generated_code"]
    return sizes


def plan_row(row: Row) -> dict:
    """Compiles the step for one row and returns its per-device memory and compile time."""
    import jax
    import jax.numpy as jnp

    from configs.paper_recipes import paper_config
    from soo_jax.models.shapes import model_config
    from soo_jax.train import config as run_config
    from soo_jax.train.mesh import MeshConfig, check_global_batch, make_mesh

    recipe = paper_config(row.model)
    loss = run_config.loss_config(recipe)
    config = model_config(row.model)
    if row.truncate_layers:
        n = row.truncate_layers
        loss = dataclasses.replace(loss, layers=(n - 1,))
        config = config.replace(num_layers=n, sliding_windows=config.sliding_windows[:n])
    lora = run_config.lora_config(recipe)

    if row.topology:
        # libtpu compiles for a TPU slice that need not exist: real TPU buffer assignment.
        from jax.experimental import topologies

        devices = topologies.get_topology_desc(topology_name=row.topology, platform="tpu").devices
    else:
        devices = jax.devices()[:row.devices]
    mesh = make_mesh(MeshConfig(data=row.data, fsdp=row.fsdp, tensor=row.tensor), devices)
    check_global_batch(mesh, row.global_pairs)
    if not row.constrain:
        raise ValueError("the models now always pin activations to the batch sharding under a mesh; "
                         "rows without it (constrain=False) were measured before that change")
    started = time.perf_counter()
    jitted, args, split, frozen, state = abstract_step(
        config, recipe, loss, mesh, global_pairs=row.global_pairs, seq_len=row.seq_len,
        microbatches=row.microbatches, scan_layers=row.layer_loop == "scan", remat=row.remat)
    setup_s = time.perf_counter() - started
    compiled, lower_s, compile_s = lower_and_compile(jitted, args, mesh)
    sizes = memory_sizes(compiled)

    def per_device(tree) -> int:
        return sum(math.prod(x.sharding.shard_shape(x.shape)) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree))

    return {
        "key": row.key(), **dataclasses.asdict(row), "devices": row.devices, "global_pairs": row.global_pairs,
        "soo_layer": loss.layers[0], "lora_rank": lora.rank,
        "params_b": sum(math.prod(x.shape) for x in jax.tree.leaves(split.frozen)) / 1e9,
        "frozen_per_device": per_device(frozen), "train_state_per_device": per_device(state),
        **{f"{k}_bytes": v for k, v in sizes.items()},
        "setup_s": round(setup_s, 1), "lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
        "backend": row.topology or jax.default_backend(), "jax": jax.__version__,
    }


def gib(n: float) -> str:
    return f"{n / GIB:.2f}"


def loop_name(r: dict) -> str:
    """How a row ran the layers: "unrolled" (every row before issue 16), "scan", "scan + remat full"."""
    loop = r.get("layer_loop", "unrolled")
    return (loop + ("" if r.get("remat", "none") == "none" else f" + remat {r['remat']}")
            + ("" if r.get("cpu_licm", True) else " (no CPU LICM)"))


def markdown_table(results: list[dict]) -> str:
    header = ("| model | layer loop | mesh d×f×t (devices) | global batch (pairs × tokens) | weights | LoRA+Adam | argument | "
              "output | temp | code | **total** | fits " + " / ".join(DEVICE_MEMORY_GIB) + " | compile |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    from configs.paper_recipes import PAPER_CONFIG_MODULES

    order = {name: i for i, name in enumerate(PAPER_CONFIG_MODULES)}
    for r in sorted(results, key=lambda r: (order[r["model"]], r.get("truncate_layers") or 0, r["devices"],
                                            r["data"], bool(r.get("constrain")), loop_name(r))):
        fits = " / ".join("yes" if r["total_bytes"] <= size * GIB else "no" for size in DEVICE_MEMORY_GIB.values())
        batch = f"{r['global_pairs']} × {r['seq_len']}" + (f" × {r['microbatches']} mb" if r["microbatches"] > 1 else "")
        lines.append(
            f"| {r['model']} (L{r['soo_layer']}){' +c' if r.get('constrain') else ''} | {loop_name(r)} | "
            f"{r['data']}×{r['fsdp']}×{r['tensor']} ({r['devices']}) | {batch} | "
            f"{gib(r['frozen_per_device'])} | {r['train_state_per_device'] / 2**20:.1f} MiB | "
            f"{gib(r['argument_bytes'])} | {gib(r['output_bytes'])} | {gib(r['temp_bytes'])} | "
            f"{r['generated_code_bytes'] / 2**20:.1f} MiB | **{gib(r['total_bytes'])}** | {fits} | "
            f"{r['lower_s'] + r['compile_s']:.0f} s |")
    return "\n".join(lines) + "\n\nSizes in GiB per device unless marked."


def read_results(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=256, help="simulated CPU devices (>= every row's mesh)")
    parser.add_argument("--rows", nargs="*", default=list(DEFAULT_ROWS), help="model:DATAxFSDPxTENSOR ...")
    parser.add_argument("--pairs-per-shard", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--microbatches", type=int, default=1)
    parser.add_argument("--topology", help="compile for this TPU topology with libtpu (e.g. v5e:8x8) "
                        "instead of simulated CPU devices; libtpu must be importable")
    parser.add_argument("--truncate-layers", type=int, help="keep N layers, SOO layer N-1 (for per-layer slopes)")
    parser.add_argument("--layer-loop", choices=["scan", "unrolled"], default="scan")
    parser.add_argument("--remat", default="none", help="remat policy (soo_jax.models.transformer.REMAT_POLICIES)")
    parser.add_argument("--no-cpu-licm", action="store_true",
                        help="compile without XLA's while-loop invariant code motion, which on CPU hoists an f32 "
                             "copy of the bf16 weight stack out of the layer scan (see Row.cpu_licm)")
    parser.add_argument("--out", type=pathlib.Path, default=REPO_ROOT / "docs" / "scale_plan.jsonl")
    parser.add_argument("--table", type=pathlib.Path, help="print the markdown table of a results file and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(read_results(args.table)))
        return

    rows = [Row.parse(text, pairs_per_shard=args.pairs_per_shard, seq_len=args.seq_len,
                      microbatches=args.microbatches, topology=args.topology,
                      truncate_layers=args.truncate_layers, layer_loop=args.layer_loop, remat=args.remat,
                      cpu_licm=not args.no_cpu_licm)
            for text in args.rows]
    too_big = [row.key() for row in rows if row.devices > args.devices and not args.topology]
    if too_big:
        parser.error(f"rows need more than --devices {args.devices}: {too_big}")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}"
                               + (" --xla_disable_hlo_passes=while-loop-invariant-code-motion"
                                  if args.no_cpu_licm else ""))
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    load_at_start = load_average()  # compile times below depend on it
    done = {r["key"] for r in read_results(args.out)}
    for row in rows:
        if row.key() in done:
            print(f"{row.key()}: already in {args.out}", flush=True)
            continue
        result = plan_row(row)
        with args.out.open("a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"{row.key()}: total {gib(result['total_bytes'])} GiB/device "
              f"(args {gib(result['argument_bytes'])}, temp {gib(result['temp_bytes'])}), "
              f"lower {result['lower_s']} s, compile {result['compile_s']} s", flush=True)
    print(load_line(load_at_start, load_average()), flush=True)


if __name__ == "__main__":
    main()
