"""File I/O for results: atomic writes (a reader, or a crash, sees the old file or the new
one), JSON reading with one-line errors, content hashes, and directories made or moved aside."""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import pathlib
import tempfile
from typing import Any

from soo_jax.run_dir.messages import RunDirError, unwritable

# The long format of every run's per-seed values (one value per row), read by
# docs/results/make_tables.py: `set` names the scenario set or seed set, `condition` what was
# asked ("" where nothing varies), `seed` is empty for models trained by no seed.
PER_SEED_COLUMNS = ("set", "condition", "model", "seed", "quantity", "value")


def per_seed_csv(rows: list[dict]) -> str:
    """Rows with the keys PER_SEED_COLUMNS as CSV text, header first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PER_SEED_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def atomic_write_text(path: str | os.PathLike, text: str | bytes) -> pathlib.Path:
    """Writes `text` (or bytes) to `path` so that a reader, or a crash, sees the old file or the new one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> pathlib.Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or a RunDirError naming the file when it is not valid JSON."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON ({err}); repair or delete it") from None


def file_digest(path: str | os.PathLike) -> str:
    """Short content hash: a result depends on a file's bytes, not on where it lies."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def model_identity(model_dir: str | os.PathLike) -> str:
    """A model directory's config.json hash and total weight-file size: the same path can hold
    another model, and the same model can sit at another path (a moved cache)."""
    model_dir = pathlib.Path(model_dir)
    config = model_dir / "config.json"
    digest = file_digest(config) if config.is_file() else "none"
    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return f"config.json sha256 {digest}, {size} bytes of safetensors"


def move_aside(directory: pathlib.Path) -> pathlib.Path:
    """Renames a directory to `<name>.old-<UTC time>` and returns the new path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = directory.with_name(f"{directory.name}.old-{stamp}")
    n = 1
    while aside.exists():
        aside, n = directory.with_name(f"{directory.name}.old-{stamp}-{n}"), n + 1
    directory.rename(aside)
    return aside


def prepare_directory(directory: str | os.PathLike) -> pathlib.Path:
    """`directory`, created if need be; RunDirError (one line, what to do) when it is a file, or
    cannot be created (a read-only file system, no permission, a parent that is a file)."""
    directory = pathlib.Path(directory).absolute()
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{directory} is a file, not a directory; choose another output directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unwritable(directory, err) from None
    return directory
