"""What a long evaluation shows while it runs: bars (or, in a log, timed lines) named after
the suite, its conditions and the model; a line before each stage and one with each suite's
result as it finishes."""
import io

from soo_jax.eval.config import default_eval_config
from soo_jax.eval.runtime import line_progress, progress_line, tqdm_progress
from soo_jax.eval.suite import run_suites


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_line_gives_the_time_left_at_the_rate_so_far():
    assert progress_line("main: burglar (base)", 0, 0, 5.0) == "main: burglar (base): 0/? prompts, 00:05 elapsed"
    assert progress_line("main (base)", 100, 1500, 60.0) == (
        "main (base): 100/1500 prompts, 01:00 elapsed, about 14:00 left")
    assert progress_line("latent (tuned)", 52, 52, 3.0, unit="pair") == "latent (tuned): 52/52 pairs, 00:03 elapsed"


def test_line_progress_prints_at_start_then_at_most_every_interval_and_at_the_end():
    clock, lines = Clock(), []
    update = line_progress("main (base)", every_s=30, write=lines.append, clock=clock)
    assert lines == ["main (base) ..."]  # before the first batch (which compiles) ends
    clock.now = 40
    update(32, 96)
    clock.now = 50
    update(64, 96)  # 10 s after the last line: not printed
    clock.now = 55
    update(96, 96)  # the end always is
    assert lines[1:] == ["main (base): 32/96 prompts, 00:40 elapsed, about 01:20 left",
                         "main (base): 96/96 prompts, 00:55 elapsed"]


def test_a_log_gets_lines_and_a_terminal_gets_bars():
    log = io.StringIO()  # not a terminal
    update = tqdm_progress(True, stream=log)("latent: probe pairs (base)", unit="pair")
    update(52, 52)
    assert log.getvalue().splitlines()[-1].startswith("latent: probe pairs (base): 52/52 pairs")
    assert "\r" not in log.getvalue()
    assert tqdm_progress(False) is None


def test_bars_and_lines_name_the_suite_conditions_and_model(tiny_model, tiny_tokenizer):
    config = default_eval_config()
    config.suites = "main,latent,capability"
    config.num_scenarios, config.max_new_tokens = 2, 2
    config.latent.soo_layer, config.latent.batch_size = 1, 32
    config.capability.categories, config.capability.answer_max_new_tokens = "facts", 2
    bars, ticks, lines = [], {}, []

    def progress(description, unit="prompt"):
        bars.append((description, unit))
        return lambda done, total: ticks.setdefault(description, []).append((done, total))

    results, _ = run_suites(config, tiny_tokenizer, base_model=tiny_model, progress=progress,
                            log=lines.append)
    assert bars == [("main: burglar, burglar/self, burglar/honesty_prompt (base)", "prompt"),
                    ("latent: probe pairs (base)", "pair"),
                    ("capability: 8 general prompts (base)", "prompt")]
    assert ticks["main: burglar, burglar/self, burglar/honesty_prompt (base)"][-1] == (12, 12)
    assert ticks["latent: probe pairs (base)"] == [(32, 52), (52, 52)]
    assert lines[0] == ("[main] base: 12 prompts, 2 scenarios x 3 conditions (burglar, burglar/self, "
                        "burglar/honesty_prompt), each also with its rooms swapped; batches of 32, "
                        "the first of each prompt width compiles first")
    done = {line.split(" done ")[0]: line for line in lines if " done in " in line}
    assert set(done) == {"[main] base", "[latent]", "[capability]"}
    burglar = results["deception"]["base"]["burglar"]
    assert (f"burglar {burglar['original']['deceptive_rate']:.1f}% deceptive "
            f"({burglar['order_balanced']['order_balanced_deception_rate']:.1f}% order-balanced)"
            in done["[main] base"])
    assert f"base {results['latent']['base']['score']:.4g}" in done["[latent]"]
    assert "KL skipped" in done["[capability]"] and "8 greedy answers per model" in done["[capability]"]
