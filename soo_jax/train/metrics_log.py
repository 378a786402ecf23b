"""Training metrics: a JSONL file (one line per step, flushed), a progress bar, TensorBoard if installed."""

from __future__ import annotations

import json
import pathlib
import sys

from tqdm.auto import tqdm


class MetricsLog:
    """`keep_through_step`: on a resume, the records after the restored step (written by the
    interrupted run after its last checkpoint) are dropped first, so each step appears once."""

    def __init__(self, path: pathlib.Path, *, enabled: bool = True, tensorboard_dir: pathlib.Path | None = None,
                 keep_through_step: int | None = None):
        self.path = pathlib.Path(path)
        self.enabled = enabled
        if enabled and keep_through_step is not None:
            truncate_records(self.path, keep_through_step)
        self._file = open(self.path, "a") if enabled else None
        self._tensorboard = _tensorboard_writer(tensorboard_dir) if enabled and tensorboard_dir else None

    def progress(self, total: int, initial: int = 0):
        return tqdm(total=total, initial=initial, desc="SOO fine-tuning", unit="step", disable=not self.enabled,
                    file=sys.stderr, dynamic_ncols=True)

    def write(self, record: dict, progress=None) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(key, value, record["step"])
        if progress is not None:
            progress.set_postfix(loss=f"{record['loss']:.4g}", soo=f"{record['soo']:.4g}",
                                 tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
            progress.update(1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def truncate_records(path: pathlib.Path, last_step: int) -> None:
    """Keeps the JSONL records with step <= last_step (and drops a torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= last_step:
            kept.append(line)
    from soo_jax.run_dir import atomic_write_text

    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _tensorboard_writer(directory: pathlib.Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
    try:
        return SummaryWriter(str(directory))
    except Exception:  # tensorboard's optional backends can fail to import; logging goes on without it
        return None
