"""Padded against ragged decode: the keys each layout reads, and the same logits."""
import pytest
import torch

from llmperf.measured.cache import KVCache
from llmperf.measured.decode_layouts import compare_decode_layouts, padded_decode, ragged_decode
from llmperf.measured.model import Transformer


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=64, seed=1)


def test_the_padded_step_reads_the_longest_context_per_row_the_ragged_one_each_its_own(tiny):
    # 4 requests, one of 40 tokens and three of 3: padded 4 x 40 keys, ragged 40 + 9
    r = compare_decode_layouts(tiny, [40, 3, 3, 3], repeat=1, rounds=1)
    assert (r.padded_kv_tokens, r.ragged_kv_tokens) == (160, 49)
    c = tiny.config
    per_token = 2 * 4 * c.n_layers * c.n_kv_heads * c.d_head  # K and V, 4 bytes each
    assert r.kv_bytes_per_token == per_token
    assert r.padded_kv_bytes == 160 * per_token and r.ragged_kv_bytes == 49 * per_token
    assert r.padded_s > 0 and r.ragged_s > 0


def test_both_layouts_give_the_same_logits_over_a_filled_cache(tiny):
    contexts = [9, 2, 17]
    cache = KVCache(tiny, 3, 17)
    gen = torch.Generator().manual_seed(0)
    cache.k.copy_(torch.randn(cache.k.shape, generator=gen))
    cache.v.copy_(torch.randn(cache.v.shape, generator=gen))
    padded = padded_decode(tiny, cache, contexts)()
    ragged = ragged_decode(tiny, cache, contexts)()
    torch.testing.assert_close(ragged, padded, rtol=1e-5, atol=1e-5)
    assert padded.shape == (3, tiny.config.vocab_size)


@pytest.mark.parametrize("contexts", [[], [0, 3], [65]])
def test_bad_contexts_raise(tiny, contexts):
    with pytest.raises(ValueError, match="contexts"):
        compare_decode_layouts(tiny, contexts)
