"""benchmarks/generate.py's decode-step timing: both sides take the same greedy steps from the
same prefilled batch (so the ratio compares the same work), and every step is timed."""
import numpy as np
import torch
import transformers

from benchmarks.generate import decode_step_times
from soo_jax.models.loader import from_pretrained
from tests.eval.conftest import write_tiny_model


def test_both_sides_decode_the_same_tokens_and_every_step_is_timed(tmp_path):
    write_tiny_model(tmp_path)
    ours = from_pretrained(tmp_path, dtype="float32")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, ours.config.vocab_size, size=(3, 8)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[0, :3] = 0  # a left-padded row
    ours_times, torch_times, same = decode_step_times(ours, theirs, tokens, mask, steps=4, device="cpu")
    assert len(ours_times) == len(torch_times) == 4 and min(ours_times + torch_times) > 0
    assert same
    # Other weights on one side: the same inputs no longer give the same steps.
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.add_(torch.randn_like(parameter))
    assert not decode_step_times(ours, theirs, tokens, mask, steps=4, device="cpu")[2]
