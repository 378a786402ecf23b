"""dot_product_attention's two layouts (prefill and single-query decode) against a plain
per-head NumPy reference, float64, with GQA, key padding and soft-capping."""
import jax
import numpy as np
import pytest

from soo_jax.models.layers import dot_product_attention


def reference_attention(q, k, v, mask, scale, softcap):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch, q_len, num_heads, _ = q.shape
    groups = num_heads // k.shape[2]
    out = np.zeros_like(q)
    for b in range(batch):
        for h in range(num_heads):
            scores = q[b, :, h] @ k[b, :, h // groups].T * scale
            if softcap is not None:
                scores = np.tanh(scores / softcap) * softcap
            scores = np.where(mask[b], scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            out[b, :, h] = probs @ v[b, :, h // groups]
    return out


@pytest.mark.parametrize("q_len", [1, 5])
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_attention_matches_per_head_reference(q_len, softcap):
    batch, keys, num_heads, num_kv, head_dim = 2, 7, 6, 2, 8
    rng = np.random.default_rng(q_len)
    q = rng.normal(size=(batch, q_len, num_heads, head_dim)).astype(np.float32)
    k = rng.normal(size=(batch, keys, num_kv, head_dim)).astype(np.float32)
    v = rng.normal(size=(batch, keys, num_kv, head_dim)).astype(np.float32)
    mask = rng.random((batch, q_len, keys)) < 0.7
    mask[:, :, 0] = True  # every query sees at least one key
    got = jax.jit(dot_product_attention, static_argnames=("scale", "softcap"))(
        q, k, v, mask, scale=0.3, softcap=softcap)
    # float32 compute against a float64 reference: 1e-5 relative to the output scale.
    want = reference_attention(q, k, v, mask, 0.3, softcap)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
