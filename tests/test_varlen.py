"""One ragged forward pass gives each sequence the logits of running it alone, reading only its
own keys, from a paged pool or from a contiguous cache with one row per sequence."""
import pytest
import torch

import llmperf as lp
from llmperf.measured import varlen
from llmperf.measured.cache import KVCache, PagedKVCache
from llmperf.measured.model import Transformer
from llmperf.measured.varlen import RaggedBatch
from llmperf.serving import BlockAllocator

GQA = lp.get_model("ref-tiny").with_(name="gqa", n_heads=8, n_kv_heads=2, d_model=64, d_ff=96,
                                     vocab_size=97, max_seq_len=96)
# (cached tokens, new tokens): a whole prompt, chunks after cached tokens, decode tokens
REQUESTS = [(0, 13), (9, 7), (20, 1), (5, 1), (31, 1), (4, 12)]
BLOCK = 4


@pytest.fixture(scope="module")
def model():
    return Transformer(GQA, max_seq_len=96, seed=5)


@pytest.fixture(params=["per_piece", "compiled"])
def decode(request, monkeypatch):
    """How decode pieces attend; "compiled" runs here uncompiled (the same function: the
    compiler's own run is tested once, below, as compiling takes seconds)."""
    monkeypatch.setattr(varlen, "compiled_decode_attention", lambda: varlen.decode_attention)
    return request.param


def prompts(model):
    gen = torch.Generator().manual_seed(0)
    return [torch.randint(0, model.config.vocab_size, (1, c + n), generator=gen)
            for c, n in REQUESTS]


def paged_store(model, kv_dtype=None):
    """A pool whose sequences interleave: the first table is consecutive, the rest scattered."""
    alloc = BlockAllocator(64, BLOCK)
    seqs = [10 + i for i in range(len(REQUESTS))]
    alloc.allocate(seqs[0], sum(REQUESTS[0]))
    for s in seqs[1:]:
        alloc.allocate(s, 1)
    for s, (c, n) in zip(seqs[1:], REQUESTS[1:]):
        alloc.append(s, c + n - 1)  # later blocks come after every other sequence's first
    return PagedKVCache(model, alloc, kv_dtype), seqs


def row_store(model):
    return KVCache(model, batch=len(REQUESTS) + 2, max_seq_len=64), [5, 0, 7, 2, 1, 3]


def run_ragged(model, cache, seqs, last_only=True, decode="per_piece"):
    """Prefill every request's cached part in one ragged pass, then its new tokens in another;
    return the second pass's logits and batch."""
    xs = prompts(model)
    cached = [(s, 0, c) for s, (c, _) in zip(seqs, REQUESTS) if c]
    batch = RaggedBatch(cache, cached)
    tokens = torch.cat([x[:, :c] for x, (c, _) in zip(xs, REQUESTS) if c], dim=1)
    model(tokens, batch.positions, batch, last_only=True)
    batch = RaggedBatch(cache, [(s, c, n) for s, (c, n) in zip(seqs, REQUESTS)], decode)
    tokens = torch.cat([x[:, c:] for x, (c, _) in zip(xs, REQUESTS)], dim=1)
    return model(tokens, batch.positions, batch, last_only=last_only), batch


def alone(model):
    """Each request's logits for its new tokens, run alone through the plain model."""
    return [model(x)[0, c:] for x, (c, _) in zip(prompts(model), REQUESTS)]


@pytest.mark.parametrize("store", [paged_store, row_store], ids=["paged", "rows"])
def test_one_ragged_pass_equals_each_request_alone(model, store, decode):
    cache, seqs = store(model)
    got, batch = run_ragged(model, cache, seqs, last_only=False, decode=decode)
    want = torch.cat(alone(model))
    assert got.shape == (sum(n for _, n in REQUESTS), model.config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    last, _ = run_ragged(model, *store(model), decode=decode)
    torch.testing.assert_close(last, got[batch.last_rows])
    assert last.shape == (len(REQUESTS), model.config.vocab_size)


def test_the_pool_mixes_consecutive_and_scattered_tables(model):
    cache, seqs = paged_store(model)
    _, batch = run_ragged(model, cache, seqs)
    kinds = {isinstance(r, slice) for r in batch.reads}
    assert kinds == {True, False}


def test_int8_pool_ragged_equals_the_int8_padded_view(model, decode):
    cache, seqs = paged_store(model, "int8")
    got, _ = run_ragged(model, cache, seqs, decode=decode)
    for row, (x, (c, n)) in enumerate(zip(prompts(model), REQUESTS)):
        ref_cache, ref_seqs = paged_store(model, "int8")
        s = ref_seqs[row]
        if c:
            model(x[:, :c], 0, ref_cache.view([s], [0], c))
        want = model(x[:, c:], c, ref_cache.view([s], [c], n), last_only=True)[0, -1]
        torch.testing.assert_close(got[row], want, rtol=1e-5, atol=1e-5)


def _poison_all_but_contexts(cache, seqs):
    """NaN in every K and V slot (int8: its scale) no piece of REQUESTS may read."""
    if isinstance(cache, PagedKVCache):
        keep = torch.zeros(cache.k.shape[2], dtype=torch.bool)
        s = cache.block_size
        for seq, (c, n) in zip(seqs, REQUESTS):
            table = cache.allocator.tables[seq]
            keep[[table[t // s] * s + t % s for t in range(c + n)]] = True
        stores = [cache.k_scale, cache.v_scale] if cache.kv_dtype else [cache.k, cache.v]
        for t in stores:
            t[:, :, ~keep] = float("nan")
    else:
        keep = torch.zeros(cache.batch, cache.max_seq_len, dtype=torch.bool)
        for seq, (c, n) in zip(seqs, REQUESTS):
            keep[seq, :c + n] = True
        for t in (cache.k, cache.v):
            t.permute(1, 3, 0, 2, 4)[~keep] = float("nan")


@pytest.mark.parametrize("store", [paged_store, row_store,
                                   lambda m: paged_store(m, "int8")],
                         ids=["paged", "rows", "int8"])
def test_each_piece_reads_its_own_keys_only(model, store, decode):
    clean, _ = run_ragged(model, *store(model), decode=decode)
    cache, seqs = store(model)
    xs = prompts(model)
    cached = [(s, 0, c) for s, (c, _) in zip(seqs, REQUESTS) if c]
    batch = RaggedBatch(cache, cached)
    model(torch.cat([x[:, :c] for x, (c, _) in zip(xs, REQUESTS) if c], dim=1),
          batch.positions, batch)
    _poison_all_but_contexts(cache, seqs)
    batch = RaggedBatch(cache, [(s, c, n) for s, (c, n) in zip(seqs, REQUESTS)], decode)
    got = model(torch.cat([x[:, c:] for x, (c, _) in zip(xs, REQUESTS)], dim=1),
                batch.positions, batch, last_only=True)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, clean)


@pytest.mark.parametrize("store", [paged_store, row_store], ids=["paged", "rows"])
def test_one_forward_pass_and_each_piece_attends_its_own_context(model, store, monkeypatch):
    cache, seqs = store(model)
    calls, read = [], []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    context = RaggedBatch.context

    def counted(self, layer_index, i, dtype):
        keys, values = context(self, layer_index, i, dtype)
        read.append((layer_index, i, keys.shape[1], values.shape[1]))
        return keys, values

    monkeypatch.setattr(RaggedBatch, "context", counted)
    try:
        _, batch = run_ragged(model, cache, seqs)
    finally:
        hook.remove()
    assert len(calls) == 2  # the cached parts' pass, then the new tokens' pass
    assert batch.keys_attended == [c + n for c, n in REQUESTS]
    last = read[-len(REQUESTS) * model.config.n_layers:]
    assert [(layer, i, k, v) for layer, i, k, v in last] == [
        (layer, i, e, e) for layer in range(model.config.n_layers)
        for i, e in enumerate(batch.keys_attended)]


@pytest.mark.parametrize("store", [paged_store, row_store], ids=["paged", "rows"])
def test_fused_decode_reads_each_pieces_own_positions(model, store):
    cache, seqs = store(model)
    batch = RaggedBatch(cache, [(s, c, n) for s, (c, n) in zip(seqs, REQUESTS)], "compiled")
    decodes = [i for i, (_, n) in enumerate(REQUESTS) if n == 1]
    assert batch.one_by_one == [i for i in range(len(REQUESTS)) if i not in decodes]
    counts = torch.bincount(batch.fused.owner, minlength=len(decodes)).tolist()
    assert counts == [batch.keys_attended[i] for i in decodes]
    ends = [sum(REQUESTS[i]) for i in decodes]
    if store is row_store:
        rows, pos = batch.fused.where
        assert rows.tolist() == [seqs[i] for i, e in zip(decodes, ends) for _ in range(e)]
        assert pos.tolist() == [t for e in ends for t in range(e)]
    else:
        s, tables = BLOCK, cache.allocator.tables
        assert batch.fused.where[0].tolist() == [
            tables[seqs[i]][t // s] * s + t % s for i, e in zip(decodes, ends) for t in range(e)]


def test_the_compiled_decode_kernel_gives_the_per_piece_logits(model):
    want, _ = run_ragged(model, *paged_store(model))
    got, _ = run_ragged(model, *paged_store(model), decode="compiled")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_greedy_decode_of_several_requests_in_ragged_steps_equals_each_alone(model):
    cache, seqs = row_store(model)
    xs = [x[:, :c + n] for x, (c, n) in zip(prompts(model), REQUESTS)][:3]
    batch = RaggedBatch(cache, [(s, 0, x.shape[1]) for s, x in zip(seqs, xs)])
    nxt = model(torch.cat(xs, 1), batch.positions, batch, last_only=True).argmax(-1)
    for _ in range(4):
        xs = [torch.cat([x, t.view(1, 1)], 1) for x, t in zip(xs, nxt)]
        batch = RaggedBatch(cache, [(s, x.shape[1] - 1, 1) for s, x in zip(seqs, xs)])
        nxt = model(nxt.view(1, -1), batch.positions, batch, last_only=True).argmax(-1)
    want = [model(x)[0, -1].argmax() for x in xs]
    assert nxt.tolist() == [int(w) for w in want]


@pytest.mark.parametrize("pieces, match", [
    ([], "pieces"), ([(10, 0, 2), (10, 2, 1)], "each seq once"), ([(10, 0, 0)], "tokens >= 1"),
    ([(10, -1, 1)], "start >= 0"), ([(10, 0, 2.5)], "ints"), ([(10, 0)], "ints"),
    ([(10, 14, 2)], "allocate or append"), ([(99, 0, 1)], "holds None")])
def test_bad_pieces_of_a_pool_raise(model, pieces, match):
    cache, _ = paged_store(model)
    with pytest.raises(ValueError, match=match):
        RaggedBatch(cache, pieces)


@pytest.mark.parametrize("pieces, match", [([(8, 0, 1)], r"row of the KVCache, in \[0, 8\)"),
                                           ([(0, 60, 5)], "max_seq_len=64")])
def test_bad_pieces_of_a_row_cache_raise(model, pieces, match):
    cache, _ = row_store(model)
    with pytest.raises(ValueError, match=match):
        RaggedBatch(cache, pieces)


def test_bad_forward_arguments_raise(model):
    cache, _ = row_store(model)
    batch = RaggedBatch(cache, [(0, 0, 3), (1, 0, 2)])
    tokens = torch.zeros(1, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"tokens must be \(1, 5\)"):
        model(tokens[:, :4], batch.positions, batch)
    with pytest.raises(ValueError, match=r"tokens must be \(1, 5\)"):
        model(tokens.view(5, 1), batch.positions, batch)
    with pytest.raises(ValueError, match="start_pos must be the RaggedBatch's positions"):
        model(tokens, batch.positions.clone(), batch)
    with pytest.raises(ValueError, match="cache must be"):
        RaggedBatch(object(), [(0, 0, 1)])
    with pytest.raises(ValueError, match="decode must be one of"):
        RaggedBatch(cache, [(0, 0, 1)], decode="cuda")
    small = Transformer(GQA, max_seq_len=8)
    batch = RaggedBatch(KVCache(small, 1, 16), [(0, 6, 4)])
    with pytest.raises(ValueError, match="max_seq_len=8"):
        small(torch.zeros(1, 4, dtype=torch.long), batch.positions, batch)
