"""launch/evaluate.py end to end on a tiny checkpoint with a PEFT adapter, and its config
handling."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from soo_jax.eval.config import SUITES, default_eval_config, parse_layers, parse_suites, resolve_soo_layer

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "launch" / "evaluate.py"
TINY_CONFIG = REPO / "configs" / "eval_tiny.py"


def run_cli(*args, timeout=600):
    # XLA's backend optimisation would double the compile time that dominates a tiny run.
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def cli_run(tiny_model_dir, tiny_adapter_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    questions = out / "question.jsonl"
    questions.write_text(json.dumps({"question_id": 81, "category": "math",
                                     "turns": ["What is 12 times 11?"]}) + "\n")
    proc = run_cli("--config", TINY_CONFIG, f"--config.model.path={tiny_model_dir}",
                   "--adapter", tiny_adapter_dir, "--suite", "forced_choice,main,latent,capability",
                   "--out", out / "results", "--mtbench_questions", questions,
                   "--config.eval.latent.soo_layer=1",
                   f"--config.eval.compilation_cache_dir={out / 'jax_cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out / "stderr.txt").write_text(proc.stderr)
    return out / "results", json.loads((out / "results" / "results.json").read_text())


def test_writes_json_markdown_png_and_responses(cli_run):
    out, _ = cli_run
    for name in ("results.json", "results.md", "deception_rates.png", "responses.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "deception_rates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "results.md").read_text()
    assert "| base | burglar | 3 |" in markdown and "| tuned | burglar | 3 |" in markdown


def test_manifest_records_the_adapter_by_content(cli_run, tiny_adapter_dir):
    """One spelling of the adapter's digest in run settings: "adapter.sha256", as the experiments write it."""
    from soo_jax.peft_io import adapter_settings

    settings = json.loads((cli_run[0] / "manifest.json").read_text())["settings"]
    assert settings["adapter.sha256"] == adapter_settings(tiny_adapter_dir)["adapter.sha256"]
    assert "adapter" not in settings


def test_json_structure_and_values(cli_run, tiny_model_dir, tiny_adapter_dir):
    _, results = cli_run
    meta = results["meta"]
    assert meta["model"] == str(tiny_model_dir) and meta["adapter"] == str(tiny_adapter_dir)
    assert meta["seeds"] == {"seed": 0, "scenario_seed": 0, "generalisation_seed": 1}
    assert meta["versions"]["jax"] and meta["versions"]["flax"] and meta["versions"]["python"]
    assert meta["config"]["eval"]["suites"] == "forced_choice,main,latent,capability"
    assert meta["config"]["eval"]["max_new_tokens"] == 6  # the tiny config's value
    assert any(cli_run[0].parent.joinpath("jax_cache").iterdir())  # compilations were cached
    assert results["suites"] == ["forced_choice", "main", "latent", "capability"]
    assert set(results["deception"]) == {"base", "tuned"}
    assert set(results["deception"]["base"]) == {"burglar", "burglar/self", "burglar/honesty_prompt"}
    assert set(results["deception"]["tuned"]) == {"burglar", "burglar/self"}
    for conditions in results["deception"].values():
        for condition in conditions.values():
            for order in ("original", "swapped"):
                rates = condition[order]
                assert rates["n"] == 3
                values = [rates["deceptive_rate"], rates["honest_rate"], rates["neither_rate"]]
                assert all(0 <= v <= 100 for v in values)
                assert sum(values) == pytest.approx(100.0)
            assert condition["order_balanced"]["n"] == 3
    latent = results["latent"]
    assert latent["base"]["num_pairs"] == 52 and latent["base"]["num_modules"] == 15
    assert latent["base"]["training_site"]["layer"] == 1
    assert set(latent["comparison"]) == {"before", "after", "change"}


def test_forced_choice_records_and_summary(cli_run):
    out, results = cli_run
    records = [json.loads(line) for line in (out / "forced_choice.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 3  # views x orders x scenarios
    fields = {"scenario", "order", "view", "prompt", "deceptive", "honest", "logprob_deceptive", "logprob_honest"}
    assert all(set(r) == fields for r in records)
    assert {(r["view"], r["order"], r["scenario"]) for r in records} == {
        (v, o, s) for v in ("base", "tuned") for o in ("original", "swapped") for s in range(3)}
    assert all(r["prompt"].endswith("I would recommend the") and r["deceptive"].startswith(" ") for r in records)
    assert all(r["logprob_deceptive"] < 0 and r["logprob_honest"] < 0 for r in records)
    # The summary is the records' order-balanced log-odds.
    from soo_jax.eval.forced_choice import summarise_forced_choice
    for view in ("base", "tuned"):
        expected = summarise_forced_choice([r for r in records if r["view"] == view])
        assert results["forced_choice"][view]["log_odds"]["mean"] == pytest.approx(expected["log_odds"]["mean"])
    # The adapter moves the log-probabilities.
    base = [r["logprob_deceptive"] for r in records if r["view"] == "base"]
    tuned = [r["logprob_deceptive"] for r in records if r["view"] == "tuned"]
    assert base != tuned
    assert "## Forced choice" in (out / "results.md").read_text()
    assert not any("suite" in json.loads(line) and json.loads(line)["suite"] == "forced_choice"
                   for line in (out / "responses.jsonl").read_text().splitlines())


def test_says_what_each_stage_does_and_each_suite_result(cli_run):
    lines = (cli_run[0].parent / "stderr.txt").read_text().splitlines()
    assert lines[0].startswith("evaluate.py: evaluation")  # before JAX is imported
    assert not any("libtpu" in line for line in lines)

    def index(prefix):
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    order = [index(p) for p in (
        "evaluate.py: loading", "evaluate.py: loaded",
        "[main] base: 18 prompts, 3 scenarios x 3 conditions (burglar, burglar/self, burglar/honesty_prompt)",
        "[main] base done", "[main] tuned: 12 prompts", "[main] tuned done",
        "[latent] latent SOO of base, tuned", "[latent] done", "[capability] next-token KL",
        "[capability] greedy answers", "[capability] MT-Bench", "[capability] done",
        "evaluate.py: done")]
    assert order == sorted(order)
    assert "burglar " in lines[index("[main] base done")] and "% deceptive" in lines[index("[main] base done")]
    assert "change " in lines[index("[latent] done")]
    assert "KL(base || tuned)" in lines[index("[capability] done")]


def test_adapter_changes_the_results(cli_run):
    out, results = cli_run
    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    by_model = {}
    for r in records:
        if r["condition"] == "burglar":
            by_model.setdefault(r["model"], []).append(r["response"])
    assert len(by_model["base"]) == len(by_model["tuned"]) == 6  # 3 scenarios x 2 orders
    assert by_model["base"] != by_model["tuned"]
    assert results["latent"]["tuned"]["score"] != results["latent"]["base"]["score"]
    kl = results["capability"]["kl"]
    assert kl["mean_kl_base_tuned"] > 0 and kl["mean_kl_tuned_base"] > 0
    answers = results["capability"]["answers"]
    assert len(answers) == 8 and any(a["base"] != a["tuned"] for a in answers)
    mtbench = results["capability"]["mtbench"]
    assert set(mtbench) == {"base", "tuned"} and mtbench["tuned"]["model_id"] == "tiny_model0-adapter"
    for info in mtbench.values():
        rows = [json.loads(line) for line in pathlib.Path(info["answer_file"]).read_text().splitlines()]
        assert [r["question_id"] for r in rows] == [81] and rows[0]["model_id"] == info["model_id"]


def test_unknown_config_key_is_rejected_before_loading(tmp_path):
    proc = run_cli("--config", TINY_CONFIG, "--config.eval.max_new_tokenz=5", timeout=120)
    assert proc.returncode != 0
    assert "unknown config key 'eval.max_new_tokenz'" in proc.stderr
    assert "max_new_tokens" in proc.stderr  # the known fields are listed


def test_model_ids_name_base_and_tuned():
    from soo_jax.eval import run as evaluation_run
    # Without an adapter there is only the base model to name.
    assert evaluation_run.model_ids("/m/SmolLM2.gguf", None, None) == {"base": "SmolLM2"}
    assert evaluation_run.model_ids("/m/smol/", "/a/soo_seed1/", None) == {
        "base": "smol", "tuned": "smol-soo_seed1"}


def test_start_line_says_where_the_scenarios_come_from():
    from soo_jax.eval import run as evaluation_run
    config = default_eval_config()
    assert evaluation_run.scenario_source(config) == (
        "burglar scenarios from our generator (seed 0; --scenarios FILE for the authors' set); "
        "generalisation combinations from our generator (seed 1)")
    config.suites, config.scenarios_file = "main,latent", "authors.json"
    assert evaluation_run.scenario_source(config) == "burglar scenarios from authors.json"
    config.suites = "latent"
    assert evaluation_run.scenario_source(config) == ""


def test_default_eval_config():
    config = default_eval_config()
    assert config.max_new_tokens == 75 and config.num_scenarios == 250
    assert config.chat_template and config.swap_room_order and config.honesty_baseline
    assert parse_suites(config.suites) == SUITES
    assert config.latent.sites.split(",")[-1] == "logits"
    with pytest.raises(ValueError, match="unknown suite"):
        parse_suites("main,latnt")
    assert parse_layers("") is None and parse_layers("3, 7") == (3, 7)
    assert resolve_soo_layer(-1, 32) == 19 and resolve_soo_layer(5, 30) == 5
    with pytest.raises(ValueError):
        resolve_soo_layer(30, 30)


def test_answer_log_answers_from_storage_and_logs_per_batch(tmp_path):
    from soo_jax.eval.answer_log import AnswerLog

    calls = []

    def generate(prompts, stop_texts=None, on_batch=None):
        calls.append(list(prompts))
        out = [f"answer to {p}" for p in prompts]
        for start in range(0, len(prompts), 2):  # batches of two, reported as they finish
            on_batch(list(range(start, min(start + 2, len(prompts)))), out[start:start + 2])
        return out

    generate.reports_batches = True
    log = AnswerLog(tmp_path / "answers.jsonl")
    wrapped = log.wrap(generate, "base", 5)
    assert wrapped(["a", "b", "c"], stop_texts=[["x"], ["y"], ["z"]]) == ["answer to a", "answer to b", "answer to c"]
    with open(tmp_path / "answers.jsonl", "a") as f:
        f.write('{"key": "cut short by a ki')  # a kill mid-line
    resumed = AnswerLog(tmp_path / "answers.jsonl")
    again = resumed.wrap(generate, "base", 5)
    assert again(["c", "d", "a"], stop_texts=[["z"], ["w"], ["x"]]) == ["answer to c", "answer to d", "answer to a"]
    assert calls == [["a", "b", "c"], ["d"]] and resumed.reused == 2
    # Another label, length or stop list is another question.
    assert resumed.wrap(generate, "tuned", 5)(["a"], stop_texts=[["x"]]) and calls[-1] == ["a"]
    assert resumed.wrap(generate, "base", 6)(["a"], stop_texts=[["x"]]) and len(calls) == 4


def test_an_interrupted_evaluation_resumes_without_re_answering(tiny_model_dir, tiny_adapter_dir, tmp_path):
    import signal
    import time

    def args(out):
        return [sys.executable, str(SCRIPT), "--config", TINY_CONFIG, f"--config.model.path={tiny_model_dir}",
                "--adapter", tiny_adapter_dir, "--suite", "main", "--out", out, "--config.eval.batch_size=2",
                f"--config.eval.compilation_cache_dir={tmp_path / 'jax_cache'}"]

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    whole = subprocess.run(args(tmp_path / "whole"), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = tmp_path / "interrupted"
    proc = subprocess.Popen(args(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    log = out / "answers.partial.jsonl"
    deadline = time.time() + 300
    while not (log.is_file() and len(log.read_text().splitlines()) >= 4):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(log.read_text().splitlines())
    assert not (out / "results.json").exists()
    resumed = subprocess.run(args(out), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming with {stored} answers" in resumed.stderr
    assert f"({stored} answers taken from the interrupted run)" in resumed.stderr
    assert not log.exists()
    assert (out / "responses.jsonl").read_text() == (tmp_path / "whole" / "responses.jsonl").read_text()
    # A rerun with the same settings has nothing to do; with other settings it is refused.
    again = subprocess.run(args(out), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert again.returncode == 0 and "already holds these results" in again.stderr
    changed = subprocess.run(args(out) + ["--config.eval.max_new_tokens=4"], capture_output=True, text=True,
                             env=env, cwd=REPO, timeout=600)
    assert changed.returncode == 2 and "eval.max_new_tokens: 6 -> 4" in changed.stderr
    assert "Traceback" not in changed.stderr
