"""What the evaluation launchers share: loading base/tuned models, progress bars, provenance
(the git commit comes from `soo_jax.run_dir.git_commit`)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time

PACKAGES = ("jax", "jaxlib", "flax", "numpy", "transformers", "tokenizers", "ml-collections",
            "optax", "matplotlib", "soo-jax")


def evaluation_view(model):
    """A second view of `model` (same weight buffers, no copy) with dropout off: the caller's
    model may be mid-training and stays as it is."""
    from flax import nnx

    from soo_jax.lora import set_dropout

    view = nnx.merge(*nnx.split(model))
    set_dropout(view, False)
    return view


def tuned_view(base, *, adapter: str | None = None, checkpoint: str | None = None):
    """The base model's weights (shared, no copy) with a PEFT adapter directory or the LoRA
    state of a training checkpoint attached, dropout off; `base` is left as it is."""
    from flax import nnx

    from soo_jax.lora import set_dropout
    from soo_jax.peft_io import load_peft_adapter
    from soo_jax.train.checkpoint import restore_lora_into

    if bool(adapter) == bool(checkpoint):
        raise ValueError("give --adapter or --checkpoint, not both" if adapter else "no adapter or checkpoint given")
    tuned = nnx.merge(*nnx.split(base))
    tuned = load_peft_adapter(tuned, adapter) if adapter else restore_lora_into(tuned, checkpoint)[0]
    set_dropout(tuned, False)
    return tuned


def load_base(config) -> tuple[str, object, object]:
    """What every runner that trains and evaluates a run config starts with: (model path, base
    model, tokenizer) of `model.path`, with `eval.compilation_cache_dir` on (`load_models`)."""
    from soo_jax.models.loader import resolve_model_path

    model_path = str(resolve_model_path(config.model.path))
    base, _, tokenizer = load_models(model_path, config.model.dtype,
                                     compilation_cache_dir=config.eval.compilation_cache_dir)
    return model_path, base, tokenizer


def load_models(model_path: str, dtype: str, *, adapter: str | None = None, checkpoint: str | None = None,
                compilation_cache_dir: str = "default"):
    """(base model, tuned model or None, tokenizer): the one model setup of evaluation, generation
    and the experiments (training loads its sharded model in `train.loop`).

    JAX's persistent compilation cache goes on first (`compilation_cache_dir`, as
    `eval.compilation_cache_dir`: "default", a directory, or "" for none), so a rerun skips
    compilation. The tuned model is `tuned_view` of the base weights; with one, the base model
    returned is `base_view(tuned)` (zeroed adapters: the base outputs, the tuned graph, so both
    share every compilation). Dropout is off in both."""
    from soo_jax.eval.capability import base_view
    from soo_jax.models.embedded import use_compilation_cache
    from soo_jax.models.loader import from_pretrained, load_tokenizer, resolve_model_path

    if adapter and checkpoint:
        raise ValueError("give --adapter or --checkpoint, not both")
    use_compilation_cache(compilation_cache_dir)
    model_path = str(resolve_model_path(model_path))
    base = from_pretrained(model_path, dtype=dtype)
    tokenizer = load_tokenizer(model_path)
    if not (adapter or checkpoint):
        return base, None, tokenizer
    tuned = tuned_view(base, adapter=adapter, checkpoint=checkpoint)
    return base_view(tuned), tuned, tokenizer


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def progress_line(description: str, done: int, total: int, elapsed_s: float, unit: str = "prompt") -> str:
    """"main (base): 64/1500 prompts, 01:10 elapsed, about 25:02 left" (the remaining time at
    the rate so far; none before the first item is done)."""
    from tqdm import tqdm

    line = f"{description}: {done}/{total or '?'} {unit}s, {tqdm.format_interval(elapsed_s)} elapsed"
    if done and total and done < total:
        line += f", about {tqdm.format_interval(elapsed_s * (total - done) / done)} left"
    return line


def line_progress(description: str, *, unit: str = "prompt", every_s: float = 5.0,
                  write=None, clock=time.monotonic):
    """A Progress callback printing one line per update, at most one every `every_s` seconds
    except the last: for logs and pipes, where a tqdm bar is one long unterminated line that a
    line-by-line reader shows only when the bar ends."""
    write = write or (lambda text: print(text, file=sys.stderr, flush=True))
    start, last = clock(), [None]
    write(f"{description} ...")

    def update(done: int, total: int) -> None:
        now = clock()
        if (total and done >= total) or last[0] is None or now - last[0] >= every_s:
            last[0] = now
            write(progress_line(description, done, total, now - start, unit))
    return update


def tqdm_progress(enabled: bool, stream=None):
    """A ProgressFactory, `(description, unit="prompt") -> Progress`: a tqdm bar per call on a
    terminal, timed lines (`line_progress`) otherwise; None when disabled."""
    if not enabled:
        return None
    stream = stream or sys.stderr
    if not stream.isatty():
        return lambda description, unit="prompt": line_progress(
            description, unit=unit, write=lambda text: print(text, file=stream, flush=True))
    from tqdm import tqdm

    def factory(description: str, unit: str = "prompt"):
        bar = tqdm(desc=description, unit=unit, file=stream, leave=True)

        def update(done: int, total: int) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            if total and done >= total:
                bar.close()
        return update
    return factory
