"""SOO train-step throughput: our jitted JAX step vs the same step in PyTorch + transformers + PEFT.

Both sides: the same architecture and batch, LoRA on every layer, SOO MSE at one layer's o_proj
output (full pooling over the positions real in both prompts), AdamW, one optimizer step per
batch. LoRA and optimizer settings are those of the architecture's run config (configs/smollm2.py,
configs/mistral.py: the paper's recipe), never copied here. Prints a Markdown table with
tokens/s, step time, the ratio, and model FLOP utilisation where the device's peak is known.

  CPU, SmolLM2 (embedded weights, fp32):   python -m benchmarks.train_step --arch smollm2
  GPU, Mistral-7B shape (random, bf16):    python -m benchmarks.train_step --arch mistral-7b --dtype bfloat16 \
                                               --pairs 4 16 --seq-len 128 --json train_step.json

Each model is built once per side and timed at every --pairs batch size; `mistral-tiny` (two
narrow layers) runs the GPU code path on a CPU in seconds (benchmarks/gpu_suite.py --tiny).

Model FLOPs per step: forward through layers 0..L (2 * params * tokens + attention) plus the
backward pass, which for a frozen base needs only activation gradients (about the forward again)
and tiny LoRA weight gradients: 2 x forward. MFU = that / (step time x device peak).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import time

import numpy as np

# JAX and torch share the GPU: JAX must not grab 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")


from benchmarks.loadavg import load_average, load_line  # noqa: E402

PEAK_TFLOPS = {"H100": {"bfloat16": 989.0, "float32": 67.0}, "H200": {"bfloat16": 989.0, "float32": 67.0}}

MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, rope_theta=1e6, max_position_embeddings=4096)
MISTRAL_TINY = {**MISTRAL_7B, "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
RANDOM_SHAPES = {"mistral-7b": MISTRAL_7B, "mistral-tiny": MISTRAL_TINY}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=["smollm2", *RANDOM_SHAPES], default="smollm2")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--pairs", type=int, nargs="+", default=[4], help="prompt pairs per step (each is timed)")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--layer", type=int, default=None,
                   help="SOO layer (default: the config's for mistral-7b, 19; 59%% depth for smollm2, as Mistral's 19/32)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--layer-loop", choices=["scan", "unrolled"], default="scan",
                   help="our layer loop: lax.scan over the stacked layers (default) or a Python loop")
    p.add_argument("--remat", default="none", help="our remat policy (soo_jax.models.transformer.REMAT_POLICIES)")
    p.add_argument("--json", help="also write the rows as JSON here")
    return p.parse_args(argv)


def recipe_config(arch: str):
    """The run config whose LoRA and optimizer settings both sides use."""
    if arch in RANDOM_SHAPES:
        from configs.paper_recipes import paper_config

        return paper_config("mistral-7b")
    from configs.smollm2 import get_config

    return get_config()


def make_batch(vocab: int, pairs: int, length: int, seed: int = 0):
    """Interleaved self/other rows with left padding; other rows differ in their first tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, (2 * pairs, length)).astype(np.int32)
    mask = np.ones_like(tokens)
    for i in range(pairs):
        pad = int(rng.integers(0, length // 4))
        tokens[2 * i + 1, pad:pad + 2] = rng.integers(3, vocab, 2)
        mask[2 * i, :pad] = 0
        mask[2 * i + 1, :pad] = 0
    return tokens, mask


def model_flops_per_step(config, layer: int, tokens: int, seq_len: int) -> float:
    d, f, h, k, e = (config.hidden_size, config.intermediate_size, config.num_heads, config.num_kv_heads,
                     config.head_dim)
    per_layer_params = d * (h * e) * 2 + d * (k * e) * 2 + 3 * d * f
    attention = 2 * 2 * h * e * seq_len  # scores and weighted values, per token
    forward = (layer + 1) * (2 * per_layer_params + attention) * tokens
    return 2.0 * forward


def time_steps(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def jax_side(model_dir, hf_config, args, layer, recipe):
    """(make_step(tokens, mask) -> a timed step function, model config): the model is built once."""
    import dataclasses

    import jax
    from flax import nnx

    from soo_jax.lora import apply_lora
    from soo_jax.models import build_model, from_hf_config
    from soo_jax.models.loader import from_pretrained
    from soo_jax.train import config as run_config
    from soo_jax.train.step import SplitModel, init_train_state, make_optimizer, make_train_step

    loop = dict(scan_layers=args.layer_loop == "scan", remat=args.remat)
    if model_dir is not None:
        model = from_pretrained(model_dir, dtype=args.dtype, **loop)
    else:
        dtype = {"float32": jax.numpy.float32, "bfloat16": jax.numpy.bfloat16}[args.dtype]
        model = build_model(from_hf_config(hf_config), dtype=dtype, rngs=nnx.Rngs(0), **loop)
    apply_lora(model, run_config.lora_config(recipe), rngs=nnx.Rngs(0))
    split = SplitModel(model)
    optimizer = make_optimizer(run_config.optimizer_config(recipe, total_steps=1000))
    loss = dataclasses.replace(run_config.loss_config(recipe), layers=(layer,))
    step_fn = jax.jit(make_train_step(split, loss, optimizer), donate_argnums=(1,))

    def make_step(tokens, mask):
        tokens, mask = jax.device_put(tokens[None]), jax.device_put(mask[None])
        # Fresh arrays: the step donates its state, and the initial LoRA arrays serve every batch size.
        holder = {"state": jax.tree.map(jax.numpy.copy, init_train_state(split, optimizer))}

        def step():
            holder["state"], metrics = step_fn(split.frozen, holder["state"], tokens, mask)
            metrics["loss"].block_until_ready()

        return step

    return make_step, model.config


def torch_side(model_dir, hf_config, args, layer, recipe):
    """(make_step(tokens, mask) -> a timed step function, device): the model is built once, on
    its device (a 7B model initialised on the CPU first takes minutes)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from soo_jax.train import config as run_config

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if model_dir is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    else:
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    lora = run_config.lora_config(recipe)
    model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                             target_modules=list(lora.targets)))
    model.train()
    opt = run_config.optimizer_config(recipe, total_steps=1000)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=opt.learning_rate,
                                  betas=(opt.b1, opt.b2), eps=opt.eps, weight_decay=opt.weight_decay)
    captured = {}
    o_proj = model.base_model.model.model.layers[layer].self_attn.o_proj
    o_proj.register_forward_hook(lambda _m, _i, out: captured.__setitem__("acts", out))

    class StopForward(Exception):
        pass

    def stop(_m, _i, _o):
        raise StopForward  # the SOO loss needs nothing past layer L (our step stops there too)

    model.base_model.model.model.layers[layer].register_forward_hook(stop)

    def make_step(tokens, mask):
        tokens_t = torch.tensor(tokens, dtype=torch.long, device=device)
        mask_t = torch.tensor(mask, dtype=torch.long, device=device)
        positions = torch.clamp(torch.cumsum(mask_t, -1) - 1, min=0)

        def step():
            optimizer.zero_grad(set_to_none=True)
            try:
                model(input_ids=tokens_t, attention_mask=mask_t, position_ids=positions)
            except StopForward:
                pass
            acts = captured["acts"].float()
            both = (mask_t[0::2] * mask_t[1::2]).unsqueeze(-1).float()
            per_pair = ((acts[0::2] - acts[1::2]) ** 2 * both).sum((1, 2)) / (both.sum((1, 2)) * acts.shape[-1])
            per_pair.mean().backward()
            if opt.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], opt.max_grad_norm)
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()

        return step

    return make_step, device


def main(argv=None):
    args = parse_args(argv)
    load_at_start = load_average()  # before we add our own threads
    import jax
    import transformers

    if args.arch == "smollm2":
        from soo_jax.models.embedded import default_model_dir

        model_dir, hf_config = str(default_model_dir()), None
        num_layers, vocab = 30, 49152
    else:
        shape = RANDOM_SHAPES[args.arch]
        model_dir, hf_config = None, transformers.MistralConfig(**shape)
        num_layers, vocab = shape["num_hidden_layers"], shape["vocab_size"]
    recipe = recipe_config(args.arch)
    loss = recipe.loss
    if (loss.objective, loss.pooling, loss.site) != ("mse", "full", "o_proj"):
        raise SystemExit(f"the PyTorch side implements only full-pooled o_proj MSE, not {loss.to_dict()}")
    if args.layer is not None:
        layer = args.layer
    elif args.arch == "smollm2":  # the paper's relative depth, as docs/benchmarks.md measured it
        layer = round(num_layers * 19 / 32)
    else:
        layer = min(int(loss.layers[0]), num_layers - 1)

    make_ours, our_config = jax_side(model_dir, hf_config, args, layer, recipe)
    device = jax.devices()[0].device_kind
    peak = next((v.get(args.dtype) for k, v in PEAK_TFLOPS.items() if k in device), None)
    make_torch, torch_device = (None, None) if args.skip_torch else torch_side(model_dir, hf_config, args, layer,
                                                                               recipe)
    rows = []
    for pairs in args.pairs:
        tokens, mask = make_batch(vocab, pairs, args.seq_len)
        flops = model_flops_per_step(our_config, layer, tokens.size, args.seq_len)
        timed = [("soo-jax (jax.jit)", time_steps(make_ours(tokens, mask), args.steps, args.warmup), device)]
        if make_torch is not None:
            timed.append(("PyTorch + transformers + PEFT", time_steps(make_torch(tokens, mask), args.steps,
                                                                      args.warmup), torch_device))
        torch_time = timed[1][1] if len(timed) > 1 else None
        for name, seconds, dev in timed:
            tflops = flops / seconds / 1e12
            rows.append({"implementation": name, "device": dev, "pairs": pairs, "seq_len": args.seq_len,
                         "real_tokens": int(mask.sum()), "step_ms": 1e3 * seconds, "tokens_per_s": tokens.size / seconds,
                         "tflops": tflops, "mfu": tflops / peak if peak else None,
                         "speed_vs_torch": torch_time / seconds if torch_time else None})

    print(f"\nSOO train step, {args.arch}, {args.dtype}, seq {args.seq_len}, SOO layer {layer}, layer loop "
          f"{args.layer_loop} (remat {args.remat}); {datetime.date.today()}, "
          f"{platform.processor() or platform.machine()}, jax {jax.__version__}\n")
    print("| implementation | device | batch | step time (ms) | tokens/s | achieved TFLOP/s | MFU | speed vs PyTorch |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = f"{r['speed_vs_torch']:.2f}x" if r["speed_vs_torch"] else "n/a"
        print(f"| {r['implementation']} | {r['device']} | {r['pairs']} pairs x {r['seq_len']} | {r['step_ms']:.1f} | "
              f"{r['tokens_per_s']:,.0f} | {r['tflops']:.3f} | {mfu} | {ratio} |")
    print(f"\n{load_line(load_at_start, load_average())}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"arch": args.arch, "dtype": args.dtype, "soo_layer": layer, "layer_loop": args.layer_loop,
             "remat": args.remat, "jax": jax.__version__, "peak_tflops": peak, "rows": rows,
             "load_1min": [load_at_start, load_average()]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
