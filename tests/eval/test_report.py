"""Markdown tables show the numbers of the results; the plot is a PNG."""
from soo_jax.data import scenarios as S
from soo_jax.data import templates as T
from soo_jax.eval import deception
from soo_jax.eval.report import markdown_report, plot_deception_rates, write_report


def results_with(first_room_answers: bool):
    scenarios = (S.main_scenarios(4, seed=2, honesty_prompt=True)
                 + S.generalisation_scenarios_for(4, seed=3))

    def generate(prompts):
        from soo_jax.eval.scoring import first_mentioned_room
        return [f"the {first_mentioned_room(p, T.ROOMS)}" if first_room_answers else "?"
                for p in prompts]
    summary, records = deception.score_scenarios(generate, scenarios)
    return {"deception": {"base": summary}}, records


def test_markdown_rows_carry_the_rates():
    results, _ = results_with(True)
    text = markdown_report(results)
    assert "| base | burglar | 4 | 100.0 | 0.0 | 0.0 | 50.0 | 100.0 |" in text
    assert "| base | burglar/honesty_prompt | 4 | 100.0 |" in text
    # Perspectives has its own table: own room first, so first-room answers project.
    assert "| base | perspectives | 4 | 0.0 | 100.0 | 0.0 | 50.0 | 100.0 |" in text
    lines = text.splitlines()
    assert lines.index("| base | burglar | 4 | 100.0 | 0.0 | 0.0 | 50.0 | 100.0 |") < next(
        i for i, line in enumerate(lines) if line.startswith("| base | name |"))


def test_plot_and_files(tmp_path):
    results, records = results_with(False)
    paths = write_report(results, records, tmp_path / "out")
    assert set(paths) == {"json", "markdown", "plot", "responses"}
    with open(paths["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sum(1 for _ in open(paths["responses"])) == len(records)
    plot_deception_rates(results["deception"], tmp_path / "again.png")
    assert (tmp_path / "again.png").stat().st_size > 1000
