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


def test_a_populated_directory_without_manifest_is_compared_with_what_it_recorded(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(RunDirError, match="no manifest.json"):
        check_manifest(tmp_path, {"a": 1}, kind="rl")
    check_manifest(tmp_path, {"a": 1}, kind="rl", legacy_settings=lambda d: {"a": 1})  # adopted
    assert json.loads((tmp_path / "manifest.json").read_text())["settings"] == {"a": 1}
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("")
    with pytest.raises(RunDirError, match="a: 2 -> 1"):
        check_manifest(other, {"a": 1}, kind="rl", legacy_settings=lambda d: {"a": 2})


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


def test_a_live_lock_holder_is_refused_and_a_dead_one_taken_over(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                    "started": "earlier"}))
        with pytest.raises(RunDirError, match=f"in use by pid {holder.pid}"):
            DirLock(tmp_path).acquire()
        (tmp_path / "result.txt").write_text("")
        with pytest.raises(RunDirError, match="cannot be moved aside"):
            claim(tmp_path, {}, kind="train", fresh=True)
    finally:
        holder.kill()
        holder.wait()
    with DirLock(tmp_path):  # the holder is gone: its lock is stale
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunDirError, match=f"in use by pid {os.getpid()}"):
            DirLock(tmp_path).acquire()
    assert "taking over the stale lock" in capsys.readouterr().err
    assert not (tmp_path / ".lock").exists()


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "results.json"
    run_dir.atomic_write_json(path, {"a": 1})
    run_dir.atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(RunDirError, match="broken.json is not valid JSON"):
        run_dir.read_json(tmp_path / "broken.json")
