"""Print a completion: `python launch/generate.py --prompt "..." [--model PATH] [--adapter DIR]`.

--model takes a Hugging Face model directory, a .gguf file, "embedded" (the default,
SmolLM2-135M-Instruct) or a registered opt-in model's name (docs/opt_in_models.md). Prompts are
rendered with the model's chat template unless --raw.
`--scenario N` asks burglar scenario N of the evaluation's generated set (seed 0) exactly as
launch/evaluate.py does: its full prompt with the answer suffix, 75 new tokens, greedy.
"""

import argparse
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded",
                        help="model directory, .gguf file, 'embedded', or an opt-in model's name")
    parser.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    parser.add_argument("--scenario", action="append", type=int, default=[],
                        help="burglar scenario N of the evaluation's generated set as the prompt (repeatable)")
    parser.add_argument("--adapter", default=None, help="PEFT LoRA adapter directory to apply")
    parser.add_argument("--max_new_tokens", type=int, default=75)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--raw", action="store_true", help="continue the raw text instead of a chat turn")
    parser.add_argument("--system", default=None, help="optional system message")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    args = parser.parse_args(argv)
    if not args.prompt and not args.scenario:
        parser.error("give --prompt TEXT or --scenario N")
    if any(n < 0 for n in args.scenario):
        parser.error("--scenario takes a scenario number >= 0")
    return args


def scenario_prompts(numbers: list[int]) -> list[str]:
    """The evaluation's prompts (`main_scenarios`, default seed and answer suffix) for these
    burglar scenario numbers."""
    from soo_jax.data.scenarios import main_scenarios

    scenarios = main_scenarios(max(numbers, default=-1) + 1, self_control=False) if numbers else []
    return [scenarios[n].prompt for n in numbers]


def main(argv=None):
    args = parse_args(argv)
    prompts = args.prompt + scenario_prompts(args.scenario)
    for n, prompt in zip(args.scenario, prompts[len(args.prompt):]):
        print(f"[scenario {n}] {prompt}", file=sys.stderr)
    import jax

    from soo_jax.models.embedded import use_compilation_cache

    # Compiled programs persist across runs: the second run of a prompt shape skips compilation.
    use_compilation_cache("default")

    from soo_jax.lora import set_dropout
    from soo_jax.models.generate import SamplingConfig, generate_text
    from soo_jax.models.loader import from_pretrained, load_tokenizer, resolve_model_path

    started = time.perf_counter()
    path = resolve_model_path(args.model)
    model = from_pretrained(path, dtype=args.dtype)
    tokenizer = load_tokenizer(path)
    if args.adapter:
        from soo_jax.peft_io import load_peft_adapter

        load_peft_adapter(model, args.adapter)
        set_dropout(model, False)
    loaded = time.perf_counter()
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    completions = generate_text(model, tokenizer, prompts, sampling=sampling, chat=not args.raw,
                                system=args.system, key=jax.random.key(args.seed))
    done = time.perf_counter()
    for prompt, completion in zip(prompts, completions):
        if len(prompts) > 1:
            print(f"### {prompt}")
        print(completion)
    print(f"[load {loaded - started:.1f}s, generate {done - loaded:.1f}s]", file=sys.stderr)


if __name__ == "__main__":
    from soo_jax import cli

    try:
        main()
    except cli.USER_ERRORS as err:  # a missing model or adapter: one line (--debug: traceback)
        if "--debug" in sys.argv:
            raise
        cli.fail(cli.one_line(err))
