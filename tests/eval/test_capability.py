"""Capability retention: KL is zero against itself and positive for a perturbed adapter; the
adapter-free view shares weights and leaves the tuned model alone; MT-Bench answers come from
our generator in FastChat's format."""
import json

import numpy as np
import pytest
from flax import nnx

from soo_jax.eval.capability import (
    base_view, make_chat_function, next_token_kl, per_prompt_kl, side_by_side_answers,
)
from soo_jax.eval.mtbench import generate_answers
from soo_jax.lora import lora_linears
from soo_jax.models.generate import SamplingConfig, generate_text

from .conftest import perturbed_adapter

PROMPTS = ["What is the capital city of Australia?", "Who wrote the novel Pride and Prejudice?",
           "What is 12 times 11?"]


@pytest.fixture(scope="module")
def tuned(tiny_model):
    model = nnx.merge(*nnx.split(tiny_model))  # a second view of the same weights
    return perturbed_adapter(model)[0]


def test_kl_is_zero_against_itself_and_positive_for_a_perturbed_adapter(tiny_model, tuned,
                                                                        tiny_tokenizer):
    same = next_token_kl(tiny_model, tiny_model, tiny_tokenizer, PROMPTS, batch_size=2)
    assert same["mean_kl_base_tuned"] == 0.0 and same["mean_kl_tuned_base"] == 0.0
    changed = next_token_kl(tiny_model, tuned, tiny_tokenizer, PROMPTS, batch_size=2)
    per_prompt = changed["per_prompt"]
    assert [p["prompt"] for p in per_prompt] == PROMPTS
    assert all(p["kl_base_tuned"] > 1e-4 and p["kl_tuned_base"] > 1e-4 for p in per_prompt)
    np.testing.assert_allclose(changed["mean_kl_base_tuned"],
                               np.mean([p["kl_base_tuned"] for p in per_prompt]))
    # Positions: the whole chat-rendered prompt, as the tokenizer counts it.
    rendered = tiny_tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                                  tokenize=False, add_generation_prompt=True)
    assert per_prompt[0]["positions"] == len(tiny_tokenizer(rendered, add_special_tokens=False)
                                             ["input_ids"])


def test_per_prompt_kl_matches_numpy():
    rng = np.random.default_rng(0)
    logits_p, logits_q = rng.normal(size=(2, 3, 5, 7))
    log_p = logits_p - np.log(np.exp(logits_p).sum(-1, keepdims=True))
    log_q = logits_q - np.log(np.exp(logits_q).sum(-1, keepdims=True))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    expected = [kl[i][mask[i]].mean() for i in range(3)]
    np.testing.assert_allclose(per_prompt_kl(log_p.astype(np.float32), log_q.astype(np.float32),
                                             mask), expected, rtol=1e-5)


def test_base_view_is_the_base_model_on_the_tuned_graph(tiny_model, tuned, tiny_tokenizer):
    view = base_view(tuned)
    adapted = [(a, b) for (_, a), (_, b) in zip(lora_linears(view), lora_linears(tuned))
               if b.lora is not None]
    assert len(adapted) == 2  # q and v, stacked over both layers, kept in the view
    assert all(not np.any(a.lora.b[...]) for a, _ in adapted)  # ... with B = 0
    assert all(np.any(b.lora.b[...]) for _, b in adapted)      # the tuned model keeps its B
    assert nnx.split(view)[0] == nnx.split(tuned)[0]  # one graph: compilations are shared
    kernel = lambda m: m.layers.self_attn.q_proj.kernel[...]  # noqa: E731  (stacked [L, in, out])
    assert kernel(view).unsafe_buffer_pointer() == kernel(tiny_model).unsafe_buffer_pointer()
    tokens = np.asarray(tiny_tokenizer([PROMPTS[0]])["input_ids"], np.int32)
    np.testing.assert_array_equal(np.asarray(view(tokens)[0]), np.asarray(tiny_model(tokens)[0]))


def test_side_by_side_answers_pairs_both_models():
    rows = side_by_side_answers(lambda ps: [p.upper() for p in ps],
                                lambda ps: [p[::-1] for p in ps], ["ab", "cd"], ids=["x", "y"])
    assert rows == [{"id": "x", "prompt": "ab", "base": "AB", "tuned": "ba"},
                    {"id": "y", "prompt": "cd", "base": "CD", "tuned": "dc"}]


def test_mtbench_answers_come_from_our_generator(tiny_model, tiny_tokenizer, tmp_path):
    questions = tmp_path / "question.jsonl"
    questions.write_text(
        json.dumps({"question_id": 81, "category": "math", "turns": [PROMPTS[2], "And 13?"]})
        + "\n" + json.dumps({"question_id": 82, "category": "writing", "turns": [PROMPTS[0]]})
        + "\n")
    answers = tmp_path / "model_answer" / "tiny.jsonl"
    chat = make_chat_function(tiny_model, tiny_tokenizer, seed=3)
    assert generate_answers(questions, answers, chat, "tiny", max_new_tokens=4) == 2
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [81, 82]
    assert all(r["model_id"] == "tiny" for r in rows)
    math_turns = rows[0]["choices"][0]["turns"]
    assert len(math_turns) == 2
    # Math is greedy (temperature 0): the first turn is the greedy completion of the question.
    greedy = generate_text(tiny_model, tiny_tokenizer, [PROMPTS[2]],
                           sampling=SamplingConfig(max_new_tokens=4))[0].strip()
    assert math_turns[0] == greedy
    # Writing samples at 0.7, reproducibly for a given seed and conversation.
    messages = [{"role": "user", "content": PROMPTS[0]}]
    assert chat(messages, 0.7, 4) == rows[1]["choices"][0]["turns"][0]
