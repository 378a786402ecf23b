"""A tiny byte-level BPE tokenizer trained on the fly (no downloads) for the batching tests."""
import pytest

from soo_jax.data.pairs import latent_soo_pairs, soo_training_pairs

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# Mistral-like: BOS rendered by the template itself, one user turn per [INST] block.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    "{% if add_generation_prompt %} Answer:{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [text for pair in soo_training_pairs() + latent_soo_pairs()
              for text in (pair.self_prompt, pair.other_prompt)]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS,
                                      pad_token=PAD)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
