"""A tiny random Llama with a word-level tokenizer over the scenario vocabulary, written to disk
once per session so that `from_pretrained`/`load_tokenizer` and the CLI see a real model
directory, plus a PEFT adapter for it that visibly changes its outputs."""
import pathlib

import jax
import pytest
from flax import nnx

from soo_jax.data import templates as T
from soo_jax.data.general_prompts import load_general_prompts
from soo_jax.data.pairs import latent_soo_pairs

PAD, BOS, EOS, UNK = "[PAD]", "<s>", "</s>", "[UNK]"
# Every message is "[ role ] content"; the answer follows "[ assistant ]".
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}[ {{ m['role'] }} ] {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}[ assistant ]{% endif %}"
)
TINY_LORA_TARGETS = ("q_proj", "v_proj")


def _corpus() -> list[str]:
    combo = T.Combination(T.ROOMS[0], T.ROOMS[1], T.CHEAP_OBJECTS[0], T.EXPENSIVE_TEST_OBJECTS[0])
    texts = [*T.ROOMS, *T.CHEAP_OBJECTS, *T.EXPENSIVE_TEST_OBJECTS, *T.SOO_TRAINING_ITEMS,
             T.HONESTY_PROMPT_TEMPLATE.format(name="Oliver"), "[ user ] [ assistant ] [ system ]",
             T.ROOM_ONLY_ANSWER_SUFFIX, T.ARXIV_MISTRAL_ANSWER_SUFFIX, "I would"]
    for kind in T.ALL_KINDS:
        for swapped in (False, True):
            for wording in ("arxiv", "repo"):
                texts.append(T.make_scenario(kind, combo, rooms_swapped=swapped,
                                             wording=wording).prompt)
    texts += [T.make_scenario(T.BURGLAR, combo, referent="self").prompt]
    texts += [t for p in latent_soo_pairs(trailing_ellipsis=True)
              for t in (p.self_prompt, p.other_prompt)]
    return texts + load_general_prompts()


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    words = sorted({w for text in _corpus() for w, _ in splitter.pre_tokenize_str(text)})
    vocab = {token: i for i, token in enumerate([PAD, BOS, EOS, UNK, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS,
                                      pad_token=PAD, unk_token=UNK)
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def write_tiny_model(directory, seed: int = 0) -> None:
    """A random 2-layer Llama (tied embeddings) as config.json + model.safetensors + tokenizer.
    Written with NumPy: importing torch would cost more than the rest of a test."""
    import numpy as np
    import transformers
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    tokenizer = build_tiny_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    rng = np.random.default_rng(seed)
    d, f, kv = config.hidden_size, config.intermediate_size, 2 * d_head(config)
    shapes = {"model.embed_tokens.weight": (config.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                   p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                   p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                   p + "mlp.down_proj.weight": (d, f), p + "input_layernorm.weight": (d,),
                   p + "post_attention_layernorm.weight": (d,)}
    tensors = {name: (1.0 + 0.1 * rng.standard_normal(shape) if len(shape) == 1
                      else 0.2 * rng.standard_normal(shape)).astype(np.float32)
               for name, shape in shapes.items()}
    config.save_pretrained(directory)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)


def d_head(config) -> int:
    return config.hidden_size // config.num_attention_heads


def perturbed_adapter(model, scale: float = 0.5, seed: int = 1, dropout: float = 0.0):
    """`model` with LoRA on q/v whose B matrices are random (a fresh adapter has B = 0);
    dropout, if any, left switched on as during training."""
    from soo_jax.lora import LoRAConfig, apply_lora, lora_linears, set_dropout

    config = LoRAConfig(rank=4, alpha=8.0, dropout=dropout, targets=TINY_LORA_TARGETS)
    apply_lora(model, config, rngs=nnx.Rngs(seed))
    key = jax.random.key(seed)
    for _, linear in lora_linears(model):
        if linear.lora is not None:
            key, sub = jax.random.split(key)
            linear.lora.b[...] = scale * jax.random.normal(sub, linear.lora.b.shape)
    set_dropout(model, dropout > 0)
    return model, config


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_model")
    write_tiny_model(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir, tmp_path_factory):
    from soo_jax.models.loader import from_pretrained
    from soo_jax.peft_io import export_peft_adapter

    model, config = perturbed_adapter(from_pretrained(tiny_model_dir))
    directory = tmp_path_factory.mktemp("tiny_adapter") / "adapter"
    export_peft_adapter(model, config, directory, base_model=str(tiny_model_dir))
    return directory


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from soo_jax.models.loader import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from soo_jax.models.loader import from_pretrained

    return from_pretrained(tiny_model_dir)
