"""Print a completion: `python launch/generate.py --prompt "..." [--model PATH] [--adapter DIR]`.

--model takes a Hugging Face model directory, a .gguf file, "embedded" (the default,
SmolLM2-135M-Instruct) or a registered opt-in model's name (docs/opt_in_models.md). Prompts are
rendered with the model's chat template unless --raw.
`--scenario N` asks burglar scenario N of the evaluation's generated set (seed 0) exactly as
launch/evaluate.py does: its full prompt with the answer suffix, 75 new tokens, greedy.
Errors are one `error:` line, as every launcher's (soo_jax/cli.py); --debug shows tracebacks.
"""

import sys
import time
from types import SimpleNamespace

from soo_jax import cli

if __name__ == "__main__":
    cli.starting("generation")

from absl import flags  # noqa: E402

NAMES = ("model", "prompt", "scenario", "adapter", "max_new_tokens", "temperature", "top_p", "seed", "dtype",
         "raw", "system")


def define_flags(values: flags.FlagValues) -> None:
    flags.DEFINE_string("model", "embedded", "Model directory, .gguf file, 'embedded', or an opt-in model's name.",
                        flag_values=values)
    flags.DEFINE_multi_string("prompt", [], "Prompt text (repeat for a batch).", flag_values=values)
    flags.DEFINE_multi_integer("scenario", [], "Burglar scenario N of the evaluation's generated set as the "
                               "prompt (repeatable).", flag_values=values)
    flags.DEFINE_string("adapter", None, "PEFT LoRA adapter directory to apply.", flag_values=values)
    flags.DEFINE_integer("max_new_tokens", 75, "Tokens to generate (>= 1).", flag_values=values)
    flags.DEFINE_float("temperature", 0.0, "Sampling temperature (>= 0; 0 = greedy).", flag_values=values)
    flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass, in (0, 1].", flag_values=values)
    flags.DEFINE_integer("seed", 0, "Sampling seed (>= 0).", flag_values=values)
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.", flag_values=values)
    flags.DEFINE_bool("raw", False, "Continue the raw text instead of a chat turn.", flag_values=values)
    flags.DEFINE_string("system", None, "Optional system message.", flag_values=values)


def args_of(values: flags.FlagValues) -> SimpleNamespace:
    return SimpleNamespace(**{name: values[name].value for name in NAMES})


def parse_args(argv: list[str] | None = None) -> SimpleNamespace:
    """The flags of `argv` (without the program name), checked (ValueError names the flag; a
    malformed flag is absl's flags.Error)."""
    values = flags.FlagValues()
    define_flags(values)
    values(["generate.py", *(argv or [])])
    return check_args(args_of(values))


def check_args(args: SimpleNamespace) -> SimpleNamespace:
    """Every value before anything is loaded; ValueError names the flag and says what to give."""
    from soo_jax import checks

    if not args.prompt and not args.scenario:
        raise ValueError("give --prompt TEXT or --scenario N")
    for n in args.scenario:
        checks.field_number("--scenario", n, integer=True, low=0)
    for name, bounds in (("max_new_tokens", dict(integer=True, low=1)), ("temperature", dict(low=0)),
                         ("top_p", dict(low=0, high=1, low_open=True)),
                         ("seed", dict(integer=True, low=0, high=2**32 - 1))):
        checks.field_number(f"--{name}", getattr(args, name), **bounds)
    return args


def scenario_prompts(numbers: list[int]) -> list[str]:
    """The evaluation's prompts (`main_scenarios`, default seed and answer suffix) for these
    burglar scenario numbers."""
    from soo_jax.data.scenarios import main_scenarios

    scenarios = main_scenarios(max(numbers, default=-1) + 1, self_control=False) if numbers else []
    return [scenarios[n].prompt for n in numbers]


def generate(args: SimpleNamespace) -> None:
    check_args(args)
    prompts = args.prompt + scenario_prompts(args.scenario)
    for n, prompt in zip(args.scenario, prompts[len(args.prompt):]):
        print(f"[scenario {n}] {prompt}", file=sys.stderr)
    import jax

    from soo_jax.eval.runtime import load_models
    from soo_jax.models.generate import SamplingConfig, generate_text
    from soo_jax.models.loader import load_config, resolve_model_path

    started = time.perf_counter()
    path = resolve_model_path(args.model)
    load_config(path)  # a damaged config.json: one line naming it, before the weights
    if args.adapter:
        from soo_jax.peft_io import read_peft_config

        read_peft_config(args.adapter)
    # The persistent compilation cache is on: a second run of a prompt shape skips compilation.
    base, tuned, tokenizer = load_models(str(path), args.dtype, adapter=args.adapter)
    model = tuned if tuned is not None else base
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


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments: {argv[1:]} (quote a prompt with spaces: --prompt \"...\")")
    generate(args_of(flags.FLAGS))


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    cli.run(main, config_required=False)
