"""The paper's per-model recipes live in configs/*.py, complete: the answer suffix the paper used
for each model, the latent SOO measured at the trained layer, the optimizer without clipping; and
configs/mistral_repo.py is the public code's recipe."""

import pytest
from absl import flags
from ml_collections import config_flags

from configs import calmerys, gemma2, mistral, mistral_repo
from configs.paper_recipes import PAPER_CONFIG_MODULES, paper_config
from soo_jax.models.shapes import model_config
from soo_jax.data.templates import ARXIV_ANSWER_SUFFIX_BY_MODEL, REPO_ANSWER_SUFFIX
from soo_jax.data.pairs import soo_training_pairs
from soo_jax.eval.config import resolve_soo_layer
from soo_jax.train import config as run_config
from soo_jax.train.loop import Schedule

# (config module, soo_jax.models.shapes name, layer count)
PAPER = [(mistral, "mistral-7b", 32), (gemma2, "gemma-2-27b", 46), (calmerys, "calmerys-78b", 86)]


@pytest.mark.parametrize("module,shape_name,num_layers", PAPER, ids=[m.MODEL for m, _, _ in PAPER])
def test_paper_config_evaluates_with_its_suffix_at_its_trained_layer(module, shape_name, num_layers):
    c = module.get_config()
    assert c.eval.answer_suffix == ARXIV_ANSWER_SUFFIX_BY_MODEL[module.MODEL]
    # What suite.py measures as "the training site" is the layer the loss trained.
    assert resolve_soo_layer(c.eval.latent.soo_layer, num_layers) == c.loss.layers[0]
    assert (c.eval.latent.soo_site, c.eval.latent.soo_pooling) == (c.loss.site, c.loss.pooling)
    assert model_config(shape_name).num_layers == num_layers
    assert c.data.chat_template and c.eval.chat_template  # the paper: chat templates applied
    optimizer = run_config.optimizer_config(c, total_steps=10)
    assert optimizer.max_grad_norm is None and optimizer.eps == 1e-6 and optimizer.weight_decay == 0.0
    # The evaluation's recorded config (launch/evaluate.py writes config.to_dict()) holds the values.
    recorded = c.to_dict()["eval"]
    assert recorded["answer_suffix"] == c.eval.answer_suffix
    assert recorded["latent"]["soo_layer"] == c.loss.layers[0]
    assert paper_config(shape_name).to_dict() == c.to_dict()  # the one source benchmarks read


def test_paper_layers_and_lora():
    layers = {m.MODEL: (m.get_config().loss.layers, m.get_config().lora.rank, m.get_config().lora.alpha)
              for m, _, _ in PAPER}
    assert layers == {"mistral-7b-instruct-v0.2": ((19,), 8, 32.0), "gemma-2-27b-it": ((20,), 4, 8.0),
                      "calmerys-78b-orpo-v0.1": ((57,), 4, 8.0)}
    assert set(PAPER_CONFIG_MODULES) == {name for _, name, _ in PAPER}
    # CalmeRys takes Gemma-2's unreported settings whole, batch included.
    g, c = gemma2.get_config(), calmerys.get_config()
    for key in ("lora", "train.epochs", "train.batch_size", "optimizer"):
        node_g, node_c = g, c
        for part in key.split("."):
            node_g, node_c = node_g[part], node_c[part]
        assert node_g == node_c, key


def parse_command_line(*overrides: str):
    argv = ["prog", "--config=configs/gemma2.py", *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


def test_the_latent_training_site_follows_command_line_overrides():
    assert parse_command_line("--config.loss.layers=(12,)").eval.latent.soo_layer == 12
    c = parse_command_line("--config.eval.latent.soo_layer=5")
    assert c.eval.latent.soo_layer == 5 and tuple(c.loss.layers) == (20,)  # set itself: its own value


def test_mistral_repo_is_the_public_codes_recipe():
    c = mistral_repo.get_config()
    loss = run_config.loss_config(c)
    assert (loss.objective, loss.kl_mask_padding, loss.microbatch_reduction) == ("kl_logits", False, "sum")
    assert (c.data.max_length, c.data.pad_to_multiple_of) == (128, 128)
    assert not c.data.chat_template and not c.eval.chat_template  # raw prompts in and out
    assert c.eval.answer_suffix == REPO_ANSWER_SUFFIX
    assert (c.lora.rank, c.lora.alpha, c.lora.dropout, tuple(c.lora.targets)) == (8, 32.0, 0.2, ("q_proj", "v_proj"))
    optimizer = run_config.optimizer_config(c, total_steps=60)
    assert (optimizer.learning_rate, optimizer.eps, optimizer.weight_decay, optimizer.max_grad_norm,
            optimizer.schedule) == (5e-5, 1e-6, 0.0, None, "constant")
    # 52 pairs in batches of 4 with accumulation 4, zero_grad at each epoch: 3 steps an epoch
    # (the 13th batch discarded), 60 in 20 epochs.
    schedule = Schedule(len(soo_training_pairs()), c.train.batch_size, c.train.grad_accum, c.train.epochs, seed=0)
    assert (schedule.batch_size // schedule.grad_accum, schedule.steps_per_epoch, schedule.total_steps) == (4, 3, 60)
