"""A tiny byte-level BPE tokenizer trained on the fly (no downloads), with a chat template."""

from __future__ import annotations

import functools

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from soo_jax.data.pairs import latent_soo_pairs, soo_training_pairs
    from soo_jax.data.scenarios import false_recommendation_scenarios

    corpus = [text for pair in soo_training_pairs() + latent_soo_pairs()
              for text in (pair.self_prompt, pair.other_prompt)]
    corpus += [s.prompt for s in false_recommendation_scenarios(n=50, seed=0)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, "<|user|>", "<|assistant|>", "<|system|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def make_tiny_model_dir(directory, name: str = "llama_tied", seed: int = 0):
    """A complete tiny model directory (random weights + tokenizer), loadable by our loader."""
    from tests.models.hf_reference import make_tiny_checkpoint

    tokenizer = tiny_tokenizer()
    model = make_tiny_checkpoint(name, directory, seed=seed, vocab_size=len(tokenizer))
    tokenizer.save_pretrained(directory)
    return model
