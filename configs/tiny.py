"""A seconds-long end-to-end run for tests: point model.path at a tiny random checkpoint."""

from soo_jax.eval.config import base_run_config, finalize_run_config


def get_config():
    c = base_run_config()
    c.model.path = "tests-write-a-tiny-checkpoint-here"
    c.loss.layers = (1,)
    c.lora.rank, c.lora.alpha, c.lora.dropout = 4, 8.0, 0.1
    c.train.epochs = 2
    c.train.batch_size = 8
    c.train.grad_accum = 2
    c.train.checkpoint_every = 4
    c.train.out_dir = "runs/tiny"
    c.train.evaluate = False
    c.optimizer.learning_rate = 5e-3
    return finalize_run_config(c)
