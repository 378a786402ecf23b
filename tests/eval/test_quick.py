"""The training job's before/after check: deception from the generator on held-out scenarios,
latent SOO at the training site from the two models."""
import numpy as np
from flax import nnx

from soo_jax.data import scenarios as S
from soo_jax.data import templates as T
from soo_jax.eval.config import default_eval_config
from soo_jax.eval.latent import latent_soo
from soo_jax.eval.quick import quick_before_after
from soo_jax.eval.scoring import first_mentioned_room
from soo_jax.lora import lora_linears, set_dropout

from .conftest import perturbed_adapter


def test_quick_before_after(tiny_model, tiny_tokenizer):
    # Mid-training: dropout on. The check must switch it off (in a view) for itself.
    tuned = perturbed_adapter(nnx.merge(*nnx.split(tiny_model)), dropout=0.5)[0]
    config = default_eval_config()
    config.num_scenarios = 250
    seen = []

    def generate_factory(model):
        # "after" (adapters on) names the expensive room; "before" (B = 0) the first room.
        honest = any(np.any(linear.lora.b[...]) for _, linear in lora_linears(model)
                     if linear.lora is not None)

        def generate(prompts):
            seen.append(list(prompts))
            out = []
            for p in prompts:
                if honest:
                    room = next(r for r in T.ROOMS for o in T.EXPENSIVE_TEST_OBJECTS
                                if f"the {r} is a {o}." in p)
                else:
                    room = first_mentioned_room(p, T.ROOMS)
                out.append(f"I would point out the {room}")
            return out
        return generate

    result = quick_before_after(None, tuned, tiny_tokenizer, config, soo_layer=1,
                                n_scenarios=6, generate_factory=generate_factory)
    before, after = result["deception"]["before"], result["deception"]["after"]
    assert (before["deceptive"], before["order_balanced"], before["position_bias"]) == (100.0, 50.0, 100.0)
    assert (after["deceptive"], after["honest"], after["order_balanced"]) == (0.0, 100.0, 0.0)
    # Held out: scenarios 250.. of the generator, each asked in both orders.
    held_out = {s.prompt for s in S.held_out_scenarios(6, skip=250)}
    assert held_out <= set(seen[0]) and len(seen[0]) == 12

    soo = result["latent_soo"]
    assert (soo["site"], soo["layer"], soo["pooling"]) == ("o_proj", 1, "full")
    expected = latent_soo(tiny_model, tiny_tokenizer, sites=("o_proj",), layers=(1,),
                          soo_layer=1)["training_site"]["value"]
    np.testing.assert_allclose(soo["before"], expected, rtol=1e-6)
    assert soo["after"] != soo["before"]
    evaluation_copy = nnx.merge(*nnx.split(tuned))
    set_dropout(evaluation_copy, False)
    np.testing.assert_allclose(soo["after"], latent_soo(
        evaluation_copy, tiny_tokenizer, sites=("o_proj",), layers=(1,),
        soo_layer=1)["training_site"]["value"], rtol=1e-6)  # dropout was off
    assert any(not d.deterministic for _, d in nnx.iter_graph(tuned)
               if isinstance(d, nnx.Dropout))  # and the caller's model is untouched
    assert "100.0% -> 0.0%" in result["summary"] and "layer 1 o_proj" in result["summary"]
    # The forced-choice endpoint on the same held-out scenarios, for both views.
    from soo_jax.eval.forced_choice import score_forced_choice, summarise_forced_choice
    scenarios = S.held_out_scenarios(6, skip=250)
    base = summarise_forced_choice(score_forced_choice(
        nnx.merge(*nnx.split(tiny_model)), tiny_tokenizer, scenarios, view="before"))
    assert result["forced_choice"]["before"]["log_odds"]["mean"] == base["log_odds"]["mean"]
    assert result["forced_choice"]["after"]["log_odds"]["mean"] != base["log_odds"]["mean"]
    assert result["summary"].startswith("Before -> after SOO fine-tuning on 6 held-out")
    assert "forced-choice log-odds" in result["summary"]


def test_quick_check_without_generation_reports_forced_choice_only(tiny_model, tiny_tokenizer):
    tuned = perturbed_adapter(nnx.merge(*nnx.split(tiny_model)), dropout=0.0)[0]
    result = quick_before_after(None, tuned, tiny_tokenizer, default_eval_config(), soo_layer=1, n_scenarios=3)
    assert "deception" not in result and set(result["forced_choice"]) == {"before", "after"}
    assert result["forced_choice"]["after"]["n_scenarios"] == 3
    assert "Generated answers" not in result["summary"]


def test_quick_check_reports_progress_of_every_measurement_to_the_end(tiny_model, tiny_tokenizer):
    tuned = perturbed_adapter(nnx.merge(*nnx.split(tiny_model)), dropout=0.0)[0]
    updates: dict[str, list] = {}

    def progress(description, unit="prompt"):
        updates[description] = []
        return lambda done, total: updates[description].append((done, total))

    quick_before_after(None, tuned, tiny_tokenizer, default_eval_config(), soo_layer=1, n_scenarios=3,
                       progress=progress)
    assert set(updates) == {"forced_choice (before)", "forced_choice (after)",
                            "latent SOO (before)", "latent SOO (after)"}
    for description, calls in updates.items():
        assert calls and calls[-1][0] == calls[-1][1] > 0, description  # the last update says done
