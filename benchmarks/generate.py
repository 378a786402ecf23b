"""Generation throughput of the 250-scenario deception evaluation: our KV-cache generator vs
transformers' `generate`, same model, same prompts, same batches, greedy, in one run.

CPU (SmolLM2-135M-Instruct, fp32):
    python -m benchmarks.generate --model DIR_OR_GGUF_OR_embedded [--scenarios FILE]

GPU (a Mistral-7B-shaped random model in bf16; any HF tokenizer directory supplies the
prompts' tokens and chat template, its vocabulary sets the model's):
    python -m benchmarks.generate --model mistral-7b-random --tokenizer DIR --dtype bfloat16 \
        --device cuda

Prompts are sorted by token length and cut into equal batches (the last one filled up by
repeating its final prompt), exactly as `soo_jax.eval.deception.make_generator` does; both
implementations get identical batches. Our cold pass includes XLA compilation (once per
prompt width); the warm pass repeats it with everything compiled. transformers gets an
untimed two-token warm-up call first. Tokens generated count each
row up to and including its first end-of-sequence token; filler rows are not counted.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import inspect
import json
import os
import pathlib
import platform
import tempfile
import time


from benchmarks.loadavg import load_average, load_line  # noqa: E402
# JAX and torch share the GPU: JAX must not grab 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402

MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  rope_theta=1e6, sliding_window=None, rms_norm_eps=1e-5, tie_word_embeddings=False)
# Random models by name; the tiny one checks the GPU code path on a CPU in seconds.
RANDOM_SHAPES = {
    "mistral-7b-random": MISTRAL_7B,
    "mistral-tiny-random": {**MISTRAL_7B, "hidden_size": 64, "intermediate_size": 128,
                            "num_hidden_layers": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2},
}


@dataclasses.dataclass
class Batches:
    tokens: list[np.ndarray]  # per batch [B, T] left-padded
    masks: list[np.ndarray]
    real_rows: list[int]      # rows that are prompts (the rest repeat the last one)


@dataclasses.dataclass
class Run:
    name: str
    wall_s: float
    tokens: int
    completions: list[list[int]]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def build_batches(tokenizer, prompts: list[str], batch_size: int, chat: bool) -> Batches:
    from soo_jax.data.batching import fixed_size_chunks
    from soo_jax.models.generate import chat_prompts, encode_left_padded

    texts = chat_prompts(tokenizer, prompts) if chat else list(prompts)
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=not chat)["input_ids"]]
    ordered = [texts[i] for i in np.argsort(lengths, kind="stable")]
    batches = Batches([], [], [])
    for start, rows in zip(range(0, len(ordered), batch_size), fixed_size_chunks(len(ordered), batch_size)):
        batches.real_rows.append(min(batch_size, len(ordered) - start))
        tokens, mask = encode_left_padded(tokenizer, [ordered[r] for r in rows], add_special_tokens=not chat)
        batches.tokens.append(tokens)
        batches.masks.append(mask)
    return batches


def completion(row: np.ndarray, eos: set[int]) -> list[int]:
    out = []
    for token in row.tolist():
        out.append(token)
        if token in eos:
            break
    return out


def run_ours(model, batches: Batches, max_new_tokens: int, eos: set[int], pad_id: int,
             name: str) -> Run:
    from soo_jax.models.generate import SamplingConfig, generate_tokens

    sampling = SamplingConfig(max_new_tokens=max_new_tokens, eos_token_ids=tuple(sorted(eos)))
    completions = []
    start = time.perf_counter()
    for tokens, mask, real in zip(batches.tokens, batches.masks, batches.real_rows):
        out, _ = generate_tokens(model, tokens, mask, sampling, pad_id=pad_id)  # host arrays
        completions += [completion(row, eos) for row in out[:real]]
    wall = time.perf_counter() - start
    return Run(name, wall, sum(map(len, completions)), completions)


def run_torch(model, batches: Batches, max_new_tokens: int, eos: set[int], pad_id: int,
              device: str) -> Run:
    import torch

    completions = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():  # untimed warm-up: CUDA context, kernels, allocator
        model.generate(input_ids=torch.as_tensor(batches.tokens[0][:1], device=device),
                       max_new_tokens=2, do_sample=False, pad_token_id=pad_id)
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for tokens, mask, real in zip(batches.tokens, batches.masks, batches.real_rows):
            out = model.generate(
                input_ids=torch.as_tensor(tokens, dtype=torch.long, device=device),
                attention_mask=torch.as_tensor(mask, dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                eos_token_id=sorted(eos) or None, temperature=None, top_p=None, top_k=None)
            new = out[:, tokens.shape[1]:].cpu().numpy()
            completions += [completion(row, eos) for row in new[:real]]
    sync()
    wall = time.perf_counter() - start
    return Run("transformers generate", wall, sum(map(len, completions)), completions)


def decode_step_times(ours, torch_model, tokens: np.ndarray, mask: np.ndarray, steps: int,
                      device: str) -> tuple[list[float], list[float], bool]:
    """Seconds per decode step, ours and transformers', after prefilling the same batch, and
    whether both sides chose the same greedy tokens at every step (the same work).

    Each side prefills `tokens` [B, T] (untimed), then takes `steps` single-token greedy steps
    one call each (ours: the jitted model call the generation loop runs; transformers: a forward
    with its KV cache). The first step of each side is a warm-up and not counted."""
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from soo_jax.models.transformer import extend_cache, init_cache

    batch, length = tokens.shape
    graphdef, state = nnx.split(ours)

    # The cache is donated, as the generation loop's carry is updated in place.
    @functools.partial(jax.jit, donate_argnums=(2,))
    def step(state, token, cache):
        logits, cache = nnx.merge(graphdef, state)(token[:, None], jnp.ones((batch, 1), bool),
                                                  cache=cache, logits="last")
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), cache

    @jax.jit
    def prefill(state, tokens, mask):
        cache = init_cache(ours.config, batch, length, ours.dtype)
        logits, cache = nnx.merge(graphdef, state)(tokens, mask, cache=cache, logits="last")
        return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32), extend_cache(cache, steps + 1)

    token, cache = prefill(state, jnp.asarray(tokens), jnp.asarray(mask, bool))
    ours_times, ours_tokens = [], [np.asarray(token)]
    for _ in range(steps + 1):
        start = time.perf_counter()
        token, cache = jax.block_until_ready(step(state, token, cache))
        ours_times.append(time.perf_counter() - start)
        ours_tokens.append(np.asarray(token))

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    # transformers renamed past_key_values to cache (5.25); requirements allow either side.
    cache_arg = "cache" if "cache" in inspect.signature(torch_model.forward).parameters else "past_key_values"
    torch_times, torch_tokens = [], []
    with torch.inference_mode():
        ids = torch.as_tensor(tokens, dtype=torch.long, device=device)
        attention = torch.as_tensor(mask, dtype=torch.long, device=device)
        # Positions count real tokens only, as `generate` (and our model) number left-padded rows.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        out = torch_model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True)
        cache, token_t = getattr(out, cache_arg), out.logits[:, -1].argmax(-1)
        torch_tokens.append(token_t.cpu().numpy())
        for _ in range(steps + 1):
            attention = torch.cat([attention, attention.new_ones((batch, 1))], dim=1)
            positions = positions[:, -1:] + 1
            sync()
            start = time.perf_counter()
            out = torch_model(input_ids=token_t[:, None], attention_mask=attention, position_ids=positions,
                              use_cache=True, **{cache_arg: cache})
            cache, token_t = getattr(out, cache_arg), out.logits[:, -1].argmax(-1)
            sync()
            torch_times.append(time.perf_counter() - start)
            torch_tokens.append(token_t.cpu().numpy())
    same = all(np.array_equal(a, b) for a, b in zip(ours_tokens, torch_tokens))
    return ours_times[1:], torch_times[1:], same


def load_models(args, tokenizer):
    """(our model, torch model, description)."""
    import torch
    import transformers

    from soo_jax.models.loader import from_pretrained, resolve_model_path

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[args.dtype]
    if args.model in RANDOM_SHAPES:
        config = transformers.MistralConfig(vocab_size=len(tokenizer), **RANDOM_SHAPES[args.model],
                                            bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id)
        torch.manual_seed(0)
        with torch.device(args.device):
            torch_model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        directory = tempfile.mkdtemp(prefix="mistral7b_random_", dir=args.work_dir)
        torch_model.save_pretrained(directory)  # our loader reads the very same weights
        ours = from_pretrained(directory, dtype=args.dtype)
        return ours, torch_model.eval(), f"{args.model} (vocab {len(tokenizer)})"
    path = resolve_model_path(resolve_embedded(args.model))
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch_dtype).to(args.device).eval()
    return from_pretrained(path, dtype=args.dtype), torch_model, path.name


def resolve_embedded(model: str) -> str:
    if model != "embedded":
        return model
    from soo_jax.models.embedded import default_model_dir
    return str(default_model_dir())


def prompts_for(args) -> list[str]:
    from soo_jax.data.scenarios import main_scenarios

    scenarios = main_scenarios(args.num_scenarios, scenarios_file=args.scenarios or "",
                               self_control=False)
    return [s.prompt for s in scenarios]


def table(rows: list[dict]) -> str:
    header = ("| device | date | implementation | batch | prompts | prompt tokens | "
              "tokens generated | wall time (s) | tokens/s | ours / torch |")
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['device']} | {r['date']} | {r['implementation']} | {r['batch']} | "
                     f"{r['prompts']} | {r['prompt_tokens']} | {r['tokens']} | {r['wall_s']:.1f} | "
                     f"{r['tokens_per_s']:.1f} | {r['ratio']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True,
                        help=f"HF model dir, .gguf file, 'embedded', or one of {sorted(RANDOM_SHAPES)}")
    parser.add_argument("--tokenizer", help="tokenizer dir (default: the model's)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--scenarios", help="authors' false_recommendation_scenarios.json")
    parser.add_argument("--num-scenarios", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=75)
    parser.add_argument("--raw", action="store_true", help="no chat template (public code)")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="always generate max_new_tokens (default for the random model)")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--work-dir", default=None, help="where the random model is written")
    parser.add_argument("--decode-steps", type=int, default=0,
                        help="also time this many single decode steps on the first batch, "
                             "ours vs transformers (median per step)")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    load_at_start = load_average()  # before we add our own threads

    import jax
    import torch

    from soo_jax.models.loader import load_tokenizer

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    random_model = args.model in RANDOM_SHAPES
    if random_model and not args.tokenizer:
        parser.error(f"--model {args.model} needs --tokenizer DIR")
    tokenizer = load_tokenizer(args.tokenizer or resolve_embedded(args.model))
    ours, torch_model, model_name = load_models(args, tokenizer)
    from soo_jax.models.generate import eos_token_ids

    # The EOS ids every generating caller of ours uses; transformers gets the same set.
    eos = set() if (args.ignore_eos or random_model) else set(eos_token_ids(ours.config, tokenizer))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = build_batches(tokenizer, prompts_for(args), args.batch_size, chat=not args.raw)

    runs = [run_ours(ours, batches, args.max_new_tokens, eos, pad_id, "ours, cold (incl. compile)"),
            run_ours(ours, batches, args.max_new_tokens, eos, pad_id, "ours, warm")]
    if not args.skip_torch:
        runs.append(run_torch(torch_model, batches, args.max_new_tokens, eos, pad_id, args.device))

    jax_device = jax.devices()[0]
    device = (f"{jax_device.device_kind} ({jax.default_backend()})" if jax.default_backend() != "cpu"
              else f"CPU {os.cpu_count()} cores ({platform.processor() or platform.machine()})")
    date = datetime.date.today().isoformat()
    torch_run = runs[2] if len(runs) > 2 else None
    prompt_tokens = sum(int(m[:real].sum()) for m, real in zip(batches.masks, batches.real_rows))
    rows = []
    for run in runs:
        ratio = (f"{run.tokens_per_s / torch_run.tokens_per_s:.2f}"
                 if torch_run is not None and run is not torch_run else "–")
        rows.append({"device": device, "date": date, "implementation": run.name,
                     "batch": args.batch_size, "prompts": sum(batches.real_rows),
                     "prompt_tokens": prompt_tokens,
                     "tokens": run.tokens, "wall_s": run.wall_s,
                     "tokens_per_s": run.tokens_per_s, "ratio": ratio})
    print(f"model: {model_name}, dtype {args.dtype}, max_new_tokens {args.max_new_tokens}, "
          f"{'raw prompts' if args.raw else 'chat template'}, greedy, "
          f"{len(batches.tokens)} batches, jax {jax.__version__}, torch {torch.__version__}")
    print(table(rows))
    print(load_line(load_at_start, load_average()))
    if torch_run is not None:
        same = sum(a == b for a, b in zip(runs[1].completions, torch_run.completions))
        print(f"identical completions (ours warm vs transformers): {same}/{len(torch_run.completions)}")
    decode = None
    if args.decode_steps:
        ours_times, torch_times, same = decode_step_times(ours, torch_model, batches.tokens[0], batches.masks[0],
                                                          args.decode_steps, args.device)
        decode = {"rows": int(batches.tokens[0].shape[0]), "prompt_width": int(batches.tokens[0].shape[1]),
                  "steps": args.decode_steps, "ours_ms": 1e3 * float(np.median(ours_times)),
                  "torch_ms": 1e3 * float(np.median(torch_times)), "same_tokens": same}
        print(f"one decode step, {decode['rows']} rows after a {decode['prompt_width']}-token prefill "
              f"(median of {args.decode_steps}): ours {decode['ours_ms']:.1f} ms, transformers "
              f"{decode['torch_ms']:.1f} ms, ours / torch speed {decode['torch_ms'] / decode['ours_ms']:.2f}x; "
              f"same greedy tokens at every step: {'yes' if same else 'NO'}")
        print(load_line(load_at_start, load_average()))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"model": model_name, "dtype": args.dtype, "rows": rows, "decode_step": decode}, indent=2) + "\n")


if __name__ == "__main__":
    main()
