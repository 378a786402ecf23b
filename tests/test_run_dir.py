"""soo_jax.run_dir: manifests refuse changed settings, locks keep a second process out, writes are atomic."""

import json
import os
import socket
import subprocess
import sys

import pytest

from soo_jax import run_dir
from soo_jax.run_dir import DirLock, RunDirError, check_manifest, claim


def test_flatten_and_differences_name_keys_as_the_cli_spells_them():
    flat = run_dir.flatten({"loss": {"layers": (1,), "site": "o_proj"}, "seed": 0})
    assert flat == {"loss.layers": [1], "loss.site": "o_proj", "seed": 0}
    assert run_dir.without(flat, ("loss",)) == {"seed": 0}
    assert run_dir.differences(flat, {**flat, "loss.layers": [0]}) == ["loss.layers: [1] -> [0]"]
    assert run_dir.differences({"a": 1}, {"b": 1}) == ["a: 1 -> (unset)", "b: (unset) -> 1"]


def test_manifest_accepts_the_same_settings_and_names_every_changed_key(tmp_path):
    settings = {"loss.layers": [1], "optimizer.learning_rate": 1e-4}
    check_manifest(tmp_path, settings, kind="train")
    (tmp_path / "result.txt").write_text("done")
    check_manifest(tmp_path, settings, kind="train")  # same settings: resumes
    with pytest.raises(RunDirError) as err:
        check_manifest(tmp_path, {"loss.layers": [0], "optimizer.learning_rate": 1e-3}, kind="train")
    message = str(err.value)
    assert "loss.layers: [1] -> [0]" in message and "optimizer.learning_rate: 0.0001 -> 0.001" in message
    assert "\n" not in message
    with pytest.raises(RunDirError, match="holds a 'train' run, not a 'rl' run"):
        check_manifest(tmp_path, settings, kind="rl")


def test_a_populated_directory_without_manifest_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError) as err:
        check_manifest(tmp_path, {"a": 1}, kind="rl", fresh_hint="another directory, or --fresh")
    message = str(err.value)
    assert "no manifest.json" in message and "not made by this version" in message and "--fresh" in message
    assert "\n" not in message
    assert not (tmp_path / "manifest.json").exists()


def test_fresh_moves_the_old_run_aside_and_keeps_it(tmp_path):
    out = tmp_path / "run"
    claim(out, {"a": 1}, kind="train").release()
    (out / "result.txt").write_text("old")
    with pytest.raises(RunDirError):
        claim(out, {"a": 2}, kind="train")
    claim(out, {"a": 2}, kind="train", fresh=True).release()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and (aside[0] / "result.txt").read_text() == "old"
    assert not (out / "result.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["settings"] == {"a": 2}


HOLD_LOCK = """
import sys, time
from soo_jax.run_dir import DirLock
lock = DirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(directory):
    """A process holding `directory`'s lock (it prints "held" once it does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(directory)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert holder.stdout.readline().strip() == "held"
    return holder


REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_a_held_lock_is_refused_naming_its_holder_and_freed_by_the_kernel_when_it_dies(tmp_path, capsys):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(RunDirError, match=rf"in use by pid {holder.pid} on {socket.gethostname()} since \S+; "
                                              r"wait for it to finish"):
            DirLock(tmp_path).acquire()
        (tmp_path / "result.txt").write_text("")
        with pytest.raises(RunDirError, match="cannot be moved aside"):
            claim(tmp_path, {}, kind="train", fresh=True)
        assert (tmp_path / "result.txt").exists()
    finally:
        holder.kill()  # SIGKILL: no cleanup ran, its .lock file stays behind, unlocked
        holder.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    with DirLock(tmp_path):  # no stale-lock heuristics: the kernel released it
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()}"):
            DirLock(tmp_path).acquire()  # a second claim in the same process is refused too
    assert not (tmp_path / ".lock").exists()
    assert capsys.readouterr().err == ""  # no warning about a takeover


def test_a_lock_file_naming_a_live_but_unrelated_pid_does_not_refuse(tmp_path):
    """The old heuristic refused forever when a dead holder's pid was reused by another process."""
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                "started": "long ago"}))
    with DirLock(tmp_path):
        pass
    assert not (tmp_path / ".lock").exists()


def test_a_claim_that_fails_before_writing_leaves_the_directory_as_found(tmp_path):
    new = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with claim(new, {"a": 1}, kind="train"):
            raise RuntimeError("weights missing")
    assert not new.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        with claim(empty, {"a": 1}, kind="train"):
            raise RuntimeError("weights missing")
    assert list(empty.iterdir()) == []
    with pytest.raises(RuntimeError):  # a run that wrote something keeps its manifest
        with claim(new, {"a": 1}, kind="train"):
            (new / "metrics.jsonl").write_text("{}")
            raise RuntimeError("crashed after a step")
    assert sorted(p.name for p in new.iterdir()) == ["manifest.json", "metrics.jsonl"]


@pytest.mark.parametrize("shape", ["file", "under_a_file", "read_only"])
def test_unwritable_or_file_shaped_directories_are_one_refusal(tmp_path, monkeypatch, shape):
    import errno
    import pathlib

    target = {"file": tmp_path / "f", "under_a_file": tmp_path / "f" / "run", "read_only": tmp_path / "ro" / "run"}[shape]
    (tmp_path / "f").write_text("a file")
    if shape == "read_only":  # (as root, chmod does not stop writes: the file system's answer instead)
        def mkdir(self, *args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    expected = {"file": "is a file, not a directory", "under_a_file": "Not a directory",
                "read_only": "Read-only file system"}[shape]
    for attempt in (lambda: claim(target, {"a": 1}, kind="train"), lambda: DirLock(target).acquire(),
                    lambda: check_manifest(target, {}, kind="rl")):
        with pytest.raises(RunDirError, match=f"{expected}.*choose (another|a writable) output directory"):
            attempt()
    assert (tmp_path / "f").read_text() == "a file" and not (tmp_path / "ro").exists()


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "results.json"
    run_dir.atomic_write_json(path, {"a": 1})
    run_dir.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RunDirError, match="broken.json is not valid JSON"):
        run_dir.read_json(tmp_path / "broken.json")
