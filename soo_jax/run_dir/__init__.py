"""Output directories that never mislabel a result: a manifest, an exclusive lock, atomic writes.

Every launcher writes into a directory it may find already populated by an earlier run (a
resume after a crash, or a rerun with other settings). The manifest records the settings the
results depend on; a rerun with the same settings resumes, one with different settings is
refused with a line naming each differing key, and `fresh=True` moves the old directory aside
(it is never deleted). The lock keeps a second process out of a directory that one is using.

One job a module: `manifest` (the settings compared, `claim`), `settings` (flat settings and
their differences), `lock` (`DirLock`), `files` (atomic writes, JSON, hashes), `signals`
(SIGINT/SIGTERM as a stop request) and `messages` (the one-line refusal, progress lines).
`from soo_jax import run_dir` gives every public name below.
"""

from soo_jax.run_dir.files import (
    PER_SEED_COLUMNS, atomic_write_json, atomic_write_text, file_digest, model_identity, move_aside,
    per_seed_csv, prepare_directory, read_json,
)
from soo_jax.run_dir.lock import LOCK_NAME, DirLock, utc_now
from soo_jax.run_dir.manifest import MANIFEST_NAME, check_manifest, claim, git_commit, start_fresh
from soo_jax.run_dir.messages import RunDirError, say, unwritable
from soo_jax.run_dir.settings import differences, flatten, without
from soo_jax.run_dir.signals import Interrupted, StopRequest

__all__ = [
    "LOCK_NAME", "MANIFEST_NAME", "PER_SEED_COLUMNS", "DirLock", "Interrupted", "RunDirError", "StopRequest",
    "atomic_write_json", "atomic_write_text", "check_manifest", "claim", "differences", "file_digest",
    "flatten", "git_commit", "model_identity", "move_aside", "per_seed_csv", "prepare_directory", "read_json", "say",
    "start_fresh", "unwritable", "utc_now", "without",
]
