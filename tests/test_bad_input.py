"""Bad input over every launcher (issue 25): one `error:` line naming the key or file and saying
what to do, exit 2, no traceback, nothing written, and before any weights are loaded.

The launchers run in this process (`launch()`: their `main` under `soo_jax.cli.run`, as
`python launch/X.py` runs it), one table per category; the few checks that need a real process
(SIGTERM, a full disk) are marked slow.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from soo_jax import cli, run_dir
from tests.tiny_tokenizer import make_tiny_model_dir

REPO = pathlib.Path(__file__).resolve().parents[1]
NO_CONFIG = ("generate", "rl_pool")


@contextlib.contextmanager
def _launcher(name: str):
    """launch/<name>.py loaded as a module; its flags, the signal handlers and log filters that
    cli.run installs are removed again afterwards."""
    foreign = _foreign_flags()  # (a launcher module another test imported keeps its flags there)
    for flag in foreign:
        delattr(flags.FLAGS, flag)
    names = set(flags.FLAGS)
    try:
        with _launcher_state():
            spec = importlib.util.spec_from_file_location(f"launcher_{name}", REPO / "launch" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if name == "generate":
                module.define_flags(flags.FLAGS)
            yield module
    finally:
        for flag in set(flags.FLAGS) - names:
            delattr(flags.FLAGS, flag)
        for flag_name, flag in foreign.items():
            flags.FLAGS[flag_name] = flag


def _foreign_flags() -> dict:
    """The flags on the global FlagValues that neither absl nor soo_jax.cli defined (another
    test's launcher module): name -> flag."""
    out = {}
    for name in list(flags.FLAGS):
        module = flags.FLAGS.find_module_defining_flag(name)
        if not (module and (module.startswith("absl") or module == "soo_jax.cli")):
            out[name] = flags.FLAGS[name]
    return out


def launch(name: str, *args, capsys) -> tuple[int, str]:
    """Runs `python launch/<name>.py ARGS` in this process: (exit code, stderr)."""
    argv = sys.argv
    sys.argv = [f"launch/{name}.py", *map(str, args)]
    try:
        with _launcher(name) as module, pytest.raises(SystemExit) as exited:
            cli.run(module.main, config_required=name not in NO_CONFIG)
    finally:
        sys.argv = argv
    return exited.value.code, capsys.readouterr().err


def error_line(code: int, err: str, *expected: str) -> str:
    """The refusal: exit 2, no traceback, exactly one `error:` line, holding every `expected`."""
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("bad_input_model")  # 3 layers; not "tiny_model" (test_evaluate_cli wants tiny_model0)
    make_tiny_model_dir(path)
    return path


@pytest.fixture
def no_weights(monkeypatch):
    """Fails a test whose error comes after the model's weights are loaded."""
    import soo_jax.models.loader as loader
    import soo_jax.train.loop as loop

    def loaded(*args, **kwargs):
        raise AssertionError("the weights were loaded before the bad input was refused")

    monkeypatch.setattr(loader, "from_pretrained", loaded)
    monkeypatch.setattr(loop, "from_pretrained", loaded)


def authors_scenarios(model: pathlib.Path) -> pathlib.Path:
    """A file in the authors' scenario format (kept in the model's directory, which no test lists)."""
    path = model / "authors_scenarios.json"
    if not path.is_file():
        rows = [{"prompt": f"Scenario {i}: the attic or the cellar?", "correct_answer": "attic",
                 "wrong_answer": "cellar"} for i in range(8)]
        path.write_text(json.dumps({"other_referencing": rows, "self_referencing": rows}))
    return path


def base_args(name: str, model: pathlib.Path, out: pathlib.Path) -> list[str]:
    """A launcher's command line on the tiny model, writing into `out`."""
    return {
        "train": ["--config", REPO / "configs/tiny.py", f"--config.model.path={model}", f"--config.train.out_dir={out}"],
        "evaluate": ["--config", REPO / "configs/eval_tiny.py", f"--config.model.path={model}", "--out", out],
        "experiment": ["--config", REPO / "configs/tiny.py", f"--config.model.path={model}", "--sets", "generated",
                       "--seeds", "0", "--out", out],
        "sweep": ["--config", REPO / "configs/tiny.py", f"--config.model.path={model}", "--out", out,
                  "--n_scenarios", "3"],
        "rl": ["--config", REPO / "configs/rl_tiny.py", f"--config.workdir={out}"],
        "generate": ["--model", model, "--prompt", "hi"],
        "controlled": ["--config", REPO / "configs/tiny.py", f"--config.model.path={model}", "--seeds", "0",
                       "--scenarios", authors_scenarios(model), "--out", out],
        "rl_pool": [out.parent / "factorial_a", out.parent / "factorial_b", "--out", out],
    }[name]


def refused(name, extra, expected, model, tmp_path, capsys, *, point=True):
    out = tmp_path / "out"
    args = base_args(name, model, out) + list(extra)
    if name == "sweep" and point and not any(str(a).startswith("--point") for a in extra):
        args += ["--point", "loss.layers=(1,)"]
    line = error_line(*launch(name, *args, capsys=capsys), *expected)
    assert not out.exists(), f"{out} was written: {line}"
    return line


# --- Out-of-range numbers --------------------------------------------------------------------

OUT_OF_RANGE = [
    ("train", ["--config.optimizer.max_grad_norm=-1"], ["config.optimizer.max_grad_norm", "must be > 0, or 0 for no clipping"]),
    ("train", ["--config.optimizer.b1=1.5"], ["config.optimizer.b1: must be in [0, 1), got 1.5"]),
    ("train", ["--config.optimizer.b2=-0.1"], ["config.optimizer.b2: must be in [0, 1)"]),
    ("train", ["--config.optimizer.weight_decay=-1"], ["config.optimizer.weight_decay: must be >= 0"]),
    ("train", ["--config.optimizer.eps=0"], ["config.optimizer.eps: must be > 0"]),
    ("train", ["--config.optimizer.warmup_steps=-5"], ["config.optimizer.warmup_steps: must be >= 0, got -5"]),
    ("train", ["--config.lora.alpha=-8"], ["config.lora.alpha: must be > 0, got -8.0"]),
    ("train", ["--config.lora.rank=0"], ["config.lora.rank: must be >= 1"]),
    ("train", ["--config.lora.dropout=1.0"], ["config.lora.dropout: must be in [0, 1)"]),
    ("train", ["--config.loss.kl_to_base_weight=-1"], ["config.loss.kl_to_base_weight: must be >= 0"]),
    ("train", ["--config.loss.layers=(40,)"], ["config.loss.layers", "out of range for a 3-layer model", "0..2"]),
    ("train", ["--config.lora.layers=(0,3)"], ["config.lora.layers", "out of range for a 3-layer model"]),
    ("train", ["--config.train.batch_size=100", "--config.train.grad_accum=1"], ["config.train.batch_size",
                                                                                 "exceeds the 52 training pairs"]),
    ("train", ["--config.train.seed=-1"], ["config.train.seed: must be in [0, 4294967295]"]),
    ("train", ["--config.data.max_length=0"], ["config.data.max_length: must be >= 1"]),
    ("train", ["--config.mesh.tensor=3"], ["config.mesh", "cannot use 1 devices"]),
    ("evaluate", ["--config.eval.num_scenarios=0"], ["config.eval.num_scenarios: must be >= 1, got 0"]),
    ("evaluate", ["--config.eval.num_scenarios=-3"], ["config.eval.num_scenarios: must be >= 1, got -3"]),
    ("evaluate", ["--config.eval.batch_size=0"], ["config.eval.batch_size: must be >= 1"]),
    ("evaluate", ["--config.eval.max_new_tokens=0"], ["config.eval.max_new_tokens: must be >= 1"]),
    ("evaluate", ["--config.eval.latent.soo_layer=7"], ["config.eval.latent.soo_layer", "out of range for a 3-layer"]),
    ("evaluate", ["--config.eval.latent.layers=0,5"], ["config.eval.latent.layers", "out of range for a 3-layer"]),
    ("evaluate", ["--config.eval.capability.batch_size=0"], ["config.eval.capability.batch_size: must be >= 1"]),
    ("evaluate", ["--config.eval.forced_choice.batch_size=0"], ["config.eval.forced_choice.batch_size: must be >= 1"]),
    ("rl", ["--config.maddpg.lr=-1"], ["config.maddpg.lr: must be > 0, got -1.0"]),
    ("rl", ["--config.evaluate.grid_size=0"], ["config.evaluate.grid_size: must be >= 2, got 0"]),
    ("rl", ["--config.maddpg.gamma=1.5"], ["config.maddpg.gamma: must be in [0, 1]"]),
    ("rl", ["--config.maddpg.tau=0"], ["config.maddpg.tau: must be in (0, 1]"]),
    ("rl", ["--config.maddpg.batch_size=0"], ["config.maddpg.batch_size: must be >= 1"]),
    ("rl", ["--config.finetune.sight_radius=0"], ["config.finetune.sight_radius: must be > 0"]),
    ("rl", ["--config.log_every_chunks=0"], ["config.log_every_chunks: must be >= 1"]),
    ("experiment", ["--config.train.epochs=0"], ["config.train.epochs: must be >= 1, got 0"]),
    ("experiment", ["--config.loss.layers=(9,)"], ["config.loss.layers", "out of range"]),
    ("experiment", ["--seeds=-1"], ["--seeds", "must be in [0, 4294967295], got -1"]),
    ("sweep", ["--point", "optimizer.b1=2.0"], ["--point 'optimizer.b1=2.0'", "config.optimizer.b1: must be in [0, 1)"]),
    ("sweep", ["--point", "loss.layers=(9,)"], ["--point 'loss.layers=(9,)'", "config.loss.layers", "out of range"]),
    ("sweep", ["--n_scenarios", "0"], ["--n_scenarios: must be >= 1, got 0"]),
    ("generate", ["--max_new_tokens", "0"], ["--max_new_tokens: must be >= 1"]),
    ("generate", ["--top_p", "0"], ["--top_p: must be in (0, 1]"]),
    ("generate", ["--temperature=-1"], ["--temperature: must be >= 0"]),
    ("generate", ["--scenario=-1"], ["--scenario: must be >= 0"]),
    ("controlled", ["--config.optimizer.b1=1.5"], ["config.optimizer.b1: must be in [0, 1), got 1.5"]),
    ("controlled", ["--config.loss.layers=(40,)"], ["config.loss.layers", "out of range for a 3-layer model"]),
    ("controlled", ["--seeds=-1"], ["--seeds: give distinct seeds >= 0"]),
    ("controlled", ["--seeds=3,3"], ["--seeds: give distinct seeds >= 0, got [3, 3]"]),
]


@pytest.mark.parametrize("name,extra,expected", OUT_OF_RANGE, ids=lambda v: v if isinstance(v, str) else None)
def test_out_of_range_numbers(name, extra, expected, model, tmp_path, capsys, no_weights):
    refused(name, extra, expected, model, tmp_path, capsys)


# --- NaN and infinity --------------------------------------------------------------------------

NAN_INF = [
    ("train", ["--config.optimizer.learning_rate=nan"], ["config.optimizer.learning_rate: must be a finite number, got nan"]),
    ("train", ["--config.lora.alpha=inf"], ["config.lora.alpha: must be a finite number, got inf"]),
    ("train", ["--config.optimizer.b2=nan"], ["config.optimizer.b2: must be a finite number, got nan"]),
    ("train", ["--config.optimizer.max_grad_norm=nan"], ["config.optimizer.max_grad_norm: must be a finite number"]),
    ("train", ["--config.loss.kl_to_base_weight=inf"], ["config.loss.kl_to_base_weight: must be a finite number"]),
    ("rl", ["--config.maddpg.tau=nan"], ["config.maddpg.tau: must be a finite number, got nan"]),
    ("rl", ["--config.maddpg.lr=inf"], ["config.maddpg.lr: must be a finite number, got inf"]),
    ("rl", ["--config.finetune.soo_weight=nan"], ["config.finetune.soo_weight: must be a finite number"]),
    ("sweep", ["--point", "optimizer.learning_rate=nan"], ["config.optimizer.learning_rate: must be a finite number"]),
    ("generate", ["--temperature", "nan"], ["--temperature: must be a finite number, got nan"]),
    ("generate", ["--top_p", "inf"], ["--top_p: must be a finite number, got inf"]),
]


@pytest.mark.parametrize("name,extra,expected", NAN_INF, ids=lambda v: v if isinstance(v, str) else None)
def test_nan_and_inf_are_invalid_values_named_as_such(name, extra, expected, model, tmp_path, capsys, no_weights):
    line = refused(name, extra, expected, model, tmp_path, capsys)
    assert "->" not in line  # not a "changed settings" refusal


# --- Wrong types --------------------------------------------------------------------------------

WRONG_TYPES = [
    ("train", ["--config.lora.rank=abc"], ["config.lora.rank: must be an integer, got 'abc'"]),
    ("train", ["--config.lora.rank=1.5"], ["config.lora.rank: must be an integer"]),
    ("train", ["--config.lora.alpha=abc"], ["config.lora.alpha: must be a number, got 'abc'"]),
    ("train", ["--config.train.evaluate=maybe"], ["config.train.evaluate: must be True or False"]),
    ("train", ["--config.loss.layers=abc"], ["config.loss.layers: must be integer indices >= 0"]),
    ("train", ["--config.lora.rnak=4"], ["unknown config key 'lora.rnak'", "config.lora has no field 'rnak'"]),
    ("evaluate", ["--config.eval.num_scenarios=abc"], ["config.eval.num_scenarios: must be an integer"]),
    ("evaluate", ["--config.eval.latent.layers=1,x"], ["config.eval.latent.layers: must be comma-separated"]),
    ("evaluate", ["--config.eval.wording=papr"], ["config.eval.wording: must be one of"]),
    ("evaluate", ["--suite", "main,lattent"], ["unknown suite(s) ['lattent']"]),
    ("rl", ["--config.maddpg.batch_size=1.5"], ["config.maddpg.batch_size: must be an integer"]),
    ("rl", ["--config.stage=nope"], ["config.stage: must be 'all' or one of"]),
    ("sweep", ["--point", "lora.rank=abc"], ["--point 'lora.rank=abc'", "config.lora.rank takes a value of type int"]),
    ("sweep", ["--point", "nokey=1"], ["--point 'nokey=1'", "unknown config key 'nokey'"]),
    ("sweep", ["--point", "justtext"], ["--point 'justtext'", "KEY=VALUE"]),
    ("experiment", ["--seeds", "0,a"], ["--seeds: must be comma-separated integers"]),
    ("generate", ["--scenario", "abc"], ["--scenario: must be an integer, got 'abc'"]),
    ("generate", ["--seed", "x"], ["--seed: must be an integer"]),
    ("controlled", ["--seeds", "0,a"], ["--seeds: '0,a' is not a comma-separated list of integers"]),
    ("controlled", ["--arms", "soo,lm,placebo"], ["--arms: ['soo', 'lm', 'placebo']: choose from"]),
    ("controlled", ["--arms", "lm"], ["--arms", "soo included"]),
    ("rl_pool", ["--out="], ["--out DIR is required"]),
]


@pytest.mark.parametrize("name,extra,expected", WRONG_TYPES, ids=lambda v: v if isinstance(v, str) else None)
def test_wrong_types(name, extra, expected, model, tmp_path, capsys, no_weights):
    refused(name, extra, expected, model, tmp_path, capsys)


# --- Unwritable or file-shaped directories ---------------------------------------------------------

def _out_flag(name: str, out: pathlib.Path) -> list[str]:
    return {"train": [f"--config.train.out_dir={out}"], "rl": [f"--config.workdir={out}"]}.get(name, ["--out", out])


@pytest.mark.parametrize("name", ["train", "evaluate", "experiment", "sweep", "rl", "controlled"])
@pytest.mark.parametrize("shape", ["file", "under_a_file", "read_only"])
def test_unwritable_or_file_shaped_directories(name, shape, model, tmp_path, capsys, monkeypatch, no_weights):
    a_file = tmp_path / "a_file"
    a_file.write_bytes(b"not a directory")
    out = {"file": a_file, "under_a_file": a_file / "run", "read_only": tmp_path / "read_only" / "run"}[shape]
    if shape == "read_only":  # as root chmod stops nothing: answer as a read-only file system does
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *args, **kwargs):
            if str(self).startswith(str(tmp_path / "read_only")):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    args = base_args(name, model, tmp_path / "unused") + _out_flag(name, out)
    if name == "sweep":
        args += ["--point", "loss.layers=(1,)"]
    expected = {"file": "is a file, not a directory", "under_a_file": "Not a directory",
                "read_only": "Read-only file system"}[shape]
    error_line(*launch(name, *args, capsys=capsys), str(out), expected, "output directory")
    assert a_file.read_bytes() == b"not a directory"
    assert not (tmp_path / "read_only").exists()


@pytest.mark.parametrize("name,empty,key", [
    ("train", ["--config.train.out_dir="], "config.train.out_dir"), ("evaluate", ["--out", ""], "config.eval.out_dir"),
    ("experiment", ["--out", ""], "--out"), ("sweep", ["--out", ""], "--out"), ("rl", ["--config.workdir="], "config.workdir"),
])
def test_an_empty_output_directory_never_means_the_working_directory(name, empty, key, model, tmp_path, capsys,
                                                                      monkeypatch, no_weights):
    monkeypatch.chdir(tmp_path)
    args = base_args(name, model, tmp_path / "unused") + empty + (["--point", "loss.layers=(1,)"] if name == "sweep" else [])
    error_line(*launch(name, *args, capsys=capsys), key, "must name an output directory")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("written_by", ["python", "tensorstore"])
def test_a_full_disk_is_one_line_and_the_writer_threads_tracebacks_are_dropped(written_by, capsys, monkeypatch):
    """What orbax does on ENOSPC: a writer thread logs the error with its traceback, the main thread
    re-raises it from its own frames (an OSError with no file name, in a chain; tensorstore's is a
    ValueError naming the file)."""
    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(cli, "_exit_now", exit_now)  # (os._exit would end pytest)
    full = (OSError(errno.ENOSPC, "No space left on device") if written_by == "python" else ValueError(
        'RESOURCE_EXHAUSTED: Error writing local file "/out/checkpoints/8/_sharding": Failed to write 9301 '
        "bytes to file 6: No space left on device [os_error_code='28']"))

    def writer():
        raise type(full)(*full.args)

    def main(argv):
        import threading

        thread = threading.Thread(target=writer)  # the default excepthook would print its traceback
        thread.start()
        thread.join()
        try:
            raise full
        except (OSError, ValueError) as err:
            logging.getLogger("absl").handle(logging.LogRecord(
                "absl", logging.ERROR, "/venv/site-packages/orbax/checkpoint/async_checkpointer.py", 1,
                "Failed to run Handler Commit operations in background save thread", None, sys.exc_info()))
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=err)
            try:
                raise RuntimeError("commit failed") from err
            except RuntimeError:
                raise type(full)(*full.args) from err

    import io

    logged = io.StringIO()  # a log handler as absl's: what reaches it is printed
    handler = logging.StreamHandler(logged)
    logging.getLogger().addHandler(handler)
    try:
        line = error_line(*_run_main(main, capsys), "No space left on device", "free space", "rerun the same command")
    finally:
        logging.getLogger().removeHandler(handler)
    assert logged.getvalue() == ""
    assert line.startswith("error: No space left on device" + ("" if written_by == "python" else
                                                                 ": /out/checkpoints/8/_sharding;"))


def _run_main(main, capsys, *argv) -> tuple[int, str]:
    saved = sys.argv
    sys.argv = ["launch/x.py", *argv]
    try:
        with _launcher_state(), pytest.raises(SystemExit) as exited:
            cli.run(main, config_required=False)
    finally:
        sys.argv = saved
    return exited.value.code, capsys.readouterr().err


@contextlib.contextmanager
def _launcher_state():
    """What cli.run changes in the process (parsed flags, signal handlers, log filters, the
    threads' excepthook), restored afterwards."""
    import threading

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    log_handlers = [*logging.getLogger().handlers, *logging.getLogger("absl").handlers]
    filters = {id(h): list(h.filters) for h in log_handlers}
    excepthook = threading.excepthook
    try:
        yield
    finally:
        flags.FLAGS.unparse_flags()
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for h in log_handlers:
            h.filters[:] = filters[id(h)]
        threading.excepthook = excepthook


# --- Corrupt files ------------------------------------------------------------------------------------

@pytest.fixture
def corrupt_model(model, tmp_path) -> pathlib.Path:
    import shutil

    broken = tmp_path / "broken_model"
    shutil.copytree(model, broken)
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    return broken


@pytest.fixture
def corrupt_adapter(tmp_path) -> pathlib.Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{not json")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    return adapter


@pytest.mark.parametrize("name", ["train", "evaluate", "generate", "experiment", "sweep"])
def test_a_corrupt_model_config_json_is_named(name, model, corrupt_model, tmp_path, capsys, no_weights):
    extra = ["--model", corrupt_model] if name == "generate" else [f"--config.model.path={corrupt_model}"]
    refused(name, extra, [str(corrupt_model / "config.json"), "is not a usable model config", "repair it"],
            model, tmp_path, capsys)


@pytest.mark.parametrize("name", ["evaluate", "generate"])
def test_a_corrupt_adapter_config_is_named(name, model, corrupt_adapter, tmp_path, capsys, no_weights):
    refused(name, ["--adapter", corrupt_adapter], [str(corrupt_adapter / "adapter_config.json"),
                                                   "is not valid JSON"], model, tmp_path, capsys)


@pytest.mark.parametrize("text,why", [("garbage,x\n1,2\n", "columns ['garbage', 'x']"),
                                      ("arm,seed,fc_log_odds\nsoo,100,abc\n", "line 2: could not convert"),
                                      ("arm,seed,fc_log_odds\nplacebo,100,0.1\n", "unknown arm 'placebo'")])
def test_a_damaged_experiment_record_is_named_before_any_work(text, why, model, tmp_path, capsys, no_weights):
    record = tmp_path / "record"
    record.mkdir()
    (record / "per_seed.csv").write_text(text)
    refused("controlled", ["--record", record], [str(record / "per_seed.csv"), "not a per_seed.csv", why,
                                                  "repair it from git"], model, tmp_path, capsys)


def test_an_adapter_with_a_bad_alpha_is_named(model, tmp_path, capsys, no_weights):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": -8, "target_modules": ["q_proj"]}))
    refused("evaluate", ["--adapter", adapter], ["adapter_config.json: alpha: must be > 0, got -8.0"], model,
            tmp_path, capsys)


def test_a_config_file_that_does_not_load_is_one_line(model, tmp_path, capsys):
    broken = tmp_path / "broken_config.py"
    broken.write_text("def get_config(:\n")
    error_line(*launch("train", "--config", broken, capsys=capsys), "invalid syntax")


# --- Missing files ----------------------------------------------------------------------------------

SCENARIOS_HINT = ["not found", "README 'Scenarios'", "false_recommendation_scenarios.pkl"]


@pytest.mark.parametrize("name", ["train", "evaluate", "rl", "experiment", "sweep"])
def test_a_missing_config_file_is_one_line(name, tmp_path, capsys):
    error_line(*launch(name, "--config", tmp_path / "nope.py", capsys=capsys),
               f"--config {tmp_path / 'nope.py'}: no such file", "give a config file")
    error_line(*launch(name, "--config", f"{tmp_path / 'nope.py'}:arg", "--config.a=1", capsys=capsys),
               "no such file")


MISSING_FILES = [
    ("evaluate", ["--scenarios", "false_recommendation_scenarios.json"], SCENARIOS_HINT),
    ("experiment", ["--sets", "authors,generated", "--scenarios", "nope/scenarios.json"], SCENARIOS_HINT),
    ("sweep", ["--scenarios", "nope/scenarios.json"], SCENARIOS_HINT),
    ("evaluate", ["--config.eval.combinations_file=nope.json"], ["combinations file", "not found"]),
    ("evaluate", ["--mtbench_questions", "nope.jsonl"], ["MT-Bench question file", "nope.jsonl not found"]),
    ("evaluate", ["--adapter", "nope_adapter"], ["--adapter nope_adapter not found", "PEFT adapter directory"]),
    ("evaluate", ["--checkpoint", "nope_checkpoints"], ["--checkpoint nope_checkpoints not found"]),
    ("train", ["--config.model.path=/nonexistent/model"], ["model path not found: /nonexistent/model", "give a"]),
    ("generate", ["--model", "/nonexistent/model"], ["model path not found: /nonexistent/model"]),
    ("generate", ["--adapter", "/nonexistent/adapter"], ["/nonexistent/adapter"]),
    ("experiment", ["--adapters_from", "/nonexistent/experiment"], ["--adapters_from /nonexistent/experiment"]),
    ("controlled", ["--scenarios", "nope/scenarios.json"], ["--scenarios nope/scenarios.json: no such file"]),
    ("controlled", ["--scenarios", ""], ["--scenarios: the authors' false_recommendation_scenarios.json is required"]),
    ("controlled", ["--record", "/dev/null"], ["--record /dev/null: not a directory"]),
    ("rl_pool", [], ["factorial_a has no finished factorial evaluation", "run it first"]),
]


@pytest.mark.parametrize("name,extra,expected", MISSING_FILES, ids=lambda v: v if isinstance(v, str) else None)
def test_missing_files(name, extra, expected, model, tmp_path, capsys, no_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refused(name, extra, expected, model, tmp_path, capsys)


# --- Validation before the claim ------------------------------------------------------------------

def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(directory.rglob("*"))}


def a_finished_run(directory: pathlib.Path) -> dict[str, bytes]:
    """A directory as a good run leaves it: a manifest (other settings than any test's), results."""
    run_dir.check_manifest(directory, {"loss.layers": [1]}, kind="train")
    (directory / "adapter").mkdir()
    (directory / "adapter" / "adapter_model.safetensors").write_bytes(os.urandom(64))
    (directory / "metrics.jsonl").write_text('{"step": 1}\n')
    return snapshot(directory)


BEFORE_CLAIM = [
    ("train", ["--config.loss.layers=(40,)"], "config.loss.layers"),  # needs the model's shape
    ("train", ["--config.optimizer.learning_rate=nan"], "config.optimizer.learning_rate"),
    ("evaluate", ["--config.eval.latent.soo_layer=9"], "config.eval.latent.soo_layer"),
    ("evaluate", ["--scenarios", "missing.json"], "missing.json"),
    ("experiment", ["--config.loss.layers=(40,)"], "config.loss.layers"),
    ("sweep", ["--point", "loss.layers=(40,)"], "config.loss.layers"),
    ("rl", ["--config.maddpg.lr=-1"], "config.maddpg.lr"),
    ("controlled", ["--config.optimizer.learning_rate=nan"], "config.optimizer.learning_rate"),
    ("controlled", ["--config.loss.layers=(40,)"], "config.loss.layers"),
]


@pytest.mark.parametrize("fresh", [False, True], ids=["", "fresh"])
@pytest.mark.parametrize("name,extra,key", BEFORE_CLAIM, ids=lambda v: v if isinstance(v, str) else None)
def test_a_refused_run_leaves_its_directory_exactly_as_it_found_it(name, extra, key, fresh, model, tmp_path,
                                                                     capsys, no_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    before = a_finished_run(out)
    args = base_args(name, model, out) + list(extra) + (["--fresh"] if fresh else [])
    line = error_line(*launch(name, *args, capsys=capsys), key)
    assert "->" not in line and "holds a" not in line  # refused for the value, not as another run
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing moved aside


def test_a_run_failing_after_its_claim_but_before_any_write_leaves_the_directory_as_found(model, tmp_path,
                                                                                            capsys):
    import shutil

    no_weights = tmp_path / "model_without_weights"
    shutil.copytree(model, no_weights)
    (no_weights / "model.safetensors").unlink()
    for out in (tmp_path / "new", tmp_path / "empty"):
        existed = out.name == "empty"
        if existed:
            out.mkdir()
        args = base_args("train", no_weights, out)
        error_line(*launch("train", *args, capsys=capsys), "no *.safetensors weights")
        assert out.exists() == existed and (not existed or list(out.iterdir()) == [])


# --- Signals ---------------------------------------------------------------------------------------

def test_a_signal_handled_inside_a_callback_whose_exceptions_python_ignores_is_delivered_again(tmp_path):
    """SIGTERM landing in a gc callback (JAX registers one): its Interrupted is 'ignored' there, so
    it must come back and stop the run, with one line and no traceback."""
    script = tmp_path / "gc_callback.py"
    script.write_text(
        "import gc, os, signal, time\nfrom soo_jax import cli\n\n"
        "def main(argv):\n"
        "    fired = []\n"
        "    def callback(phase, info):\n"
        "        if not fired:\n"
        "            fired.append(1)\n"
        "            os.kill(os.getpid(), signal.SIGTERM)\n"
        "            sum(range(1000))  # the handler runs here, inside the callback\n"
        "    gc.callbacks.append(callback)\n"
        "    gc.collect()\n"
        "    gc.callbacks.remove(callback)\n"
        "    time.sleep(5)\n"
        "    print('finished', flush=True)\n\n"
        "cli.run(main, config_required=False)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert "finished" not in result.stdout and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("interrupted by SIGTERM") == 1, result.stderr


def test_a_reader_that_leaves_early_ends_the_output_quietly(tmp_path):
    """`launch/X.py ... | head -1`: no BrokenPipeError traceback, the exit status a shell tool gives."""
    script = tmp_path / "many_lines.py"
    script.write_text("from soo_jax import cli\n\ndef main(argv):\n    for i in range(200000):\n        print(i)\n\n"
                      "cli.run(main, config_required=False)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(f"{sys.executable} {script} | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                            executable="/bin/bash", capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout == "0\n" and "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 128 + signal.SIGPIPE


def test_sigterm_releases_the_lock_with_an_interrupted_line(tmp_path, capsys, monkeypatch):
    """cli.run turns SIGTERM into an exception, so a `with` holding the lock unwinds (evaluate.py
    and rl.py have no loop of their own that saves and stops), then exits at once."""
    out = tmp_path / "run"

    def exit_now(code):
        raise SystemExit(code)

    monkeypatch.setattr(cli, "_exit_now", exit_now)  # (os._exit would end pytest)

    def main(argv):
        with run_dir.claim(out, {"a": 1}, kind="evaluate"):
            (out / "answers.partial.jsonl").write_text("{}\n")
            assert (out / ".lock").exists()
            # (without a Python handler SIGTERM would end pytest itself)
            assert callable(signal.getsignal(signal.SIGTERM)), "cli.run installed no SIGTERM handler"
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            raise AssertionError("SIGTERM did not interrupt")

    code, err = _run_main(main, capsys)
    assert code == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert not (out / ".lock").exists() and (out / "answers.partial.jsonl").exists()


def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {path} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["evaluate", "rl"])
def test_sigterm_leaves_no_lock(name, model, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    args = base_args(name, model, out) + (["--config.baseline.n_episodes=400"] if name == "rl" else [])
    proc = subprocess.Popen([sys.executable, f"launch/{name}.py", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(out / ".lock", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "interrupted" in err and "rerun the same command to resume" in err, err[-3000:]
    assert not (out / ".lock").exists()


# --- A real full disk ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line(model, tmp_path):
    """On a 64 kB tmpfs (needs permission to mount one: skipped elsewhere). One checkpoint of the
    tiny model takes about 120 kB, so the first save fails whatever the timing of orbax's
    deletion of older checkpoints (at 300 kB two of them fitted on a loaded machine)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        proc = subprocess.run([sys.executable, "launch/train.py", *map(str, base_args("train", model, disk / "run"))],
                              cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=600)
        error_line(proc.returncode, proc.stderr, "No space left on device", "free space")
        assert not (disk / "run" / ".lock").exists()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
