"""One decision of the end-of-sequence ids for every generating caller: a chat model's turn may end
with a token that only generation_config.json lists (Gemma-2-it's <end_of_turn>), and both the
deception/answer generator and the MT-Bench chat function must stop there."""

import json

import pytest

from soo_jax.data.scenarios import false_recommendation_scenarios
from soo_jax.eval.capability import make_chat_function
from soo_jax.models.generate import (SamplingConfig, encode_left_padded, eos_token_ids, generate_text,
                                     generate_tokens)
from soo_jax.models.loader import from_pretrained
from tests.tiny_tokenizer import make_tiny_model_dir, tiny_tokenizer

NEW_TOKENS = 8


def write_gemma_it(directory, generation_eos: list[int]) -> None:
    """A tiny Gemma-2 laid out as Gemma-2-it is: config.json names the tokenizer's EOS only,
    generation_config.json adds the end-of-turn id(s)."""
    tokenizer = tiny_tokenizer()
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)
    config_file.write_text(json.dumps(config))
    (directory / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id,
         "eos_token_id": generation_eos}))


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma2_it")
    make_tiny_model_dir(directory, name="gemma2_27b_style")
    write_gemma_it(directory, [tiny_tokenizer().eos_token_id])
    return directory


def test_generation_and_chat_answers_stop_at_a_generation_config_only_eos(gemma_dir):
    tokenizer = tiny_tokenizer()
    prompt = false_recommendation_scenarios(n=1, seed=0)[0].prompt
    messages = [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens, mask = encode_left_padded(tokenizer, [text])

    model = from_pretrained(gemma_dir)
    assert eos_token_ids(model.config, tokenizer) == (tokenizer.eos_token_id,)
    free, lengths = generate_tokens(model, tokens, mask, SamplingConfig(
        max_new_tokens=NEW_TOKENS, eos_token_ids=eos_token_ids(model.config, tokenizer)),
        pad_id=tokenizer.pad_token_id)
    free = free[0].tolist()
    assert lengths[0] == NEW_TOKENS  # no EOS yet: the answer runs to max_new_tokens
    # The "end of turn": a token the model writes at step k+1 (and not before), that neither the
    # tokenizer nor config.json calls EOS.
    k = next(i for i in range(1, NEW_TOKENS - 1) if free[i] not in free[:i] and free[i] != tokenizer.eos_token_id)
    end_of_turn = free[k]
    write_gemma_it(gemma_dir, [tokenizer.eos_token_id, end_of_turn])

    model = from_pretrained(gemma_dir)
    assert eos_token_ids(model.config, tokenizer) == tuple(sorted({tokenizer.eos_token_id, end_of_turn}))
    expected = tokenizer.decode(free[:k + 1], skip_special_tokens=True)
    chat = make_chat_function(model, tokenizer)
    assert chat(messages, 0.0, NEW_TOKENS) == expected.strip()
    generated = generate_text(model, tokenizer, [prompt], sampling=SamplingConfig(max_new_tokens=NEW_TOKENS),
                              chat=True)
    assert generated == [expected]
    assert tokenizer.decode(free, skip_special_tokens=True) != expected  # the stop cut the answer short
