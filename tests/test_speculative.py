"""Speculative decoding: the expectations, the verification step and the generation loop.

The distribution tests are chi-square goodness-of-fit tests of the tokens `verify` emits
against the target's exact distribution. Each one fails when its p-value is below
SIGNIFICANCE = 1e-6. A correct implementation fails one such test with probability 1e-6
whatever the seed (the statistic's null distribution is chi-square once every expected count
is at least 5, which `chi_square_p_value` ensures by pooling smaller cells), and this file
runs fewer than 40 of them, so a false failure happens in fewer than 4e-5 of runs (below one
in 10,000). The seeds are fixed, so each run is also reproducible. `test_chi_square_detects_a_
wrong_verifier` shows that the same test, at the same level and sample size, rejects a
verifier that is wrong in a plausible way.
"""
from __future__ import annotations

import math
import time

import pytest
import torch

import llmperf.measured.speculative as sg
from llmperf.analytic.layers import step_costs
from llmperf.analytic.perfmodel import decode_step_time
from llmperf.analytic.speculative import (
    acceptance_rate,
    batched_speculative_speedup,
    best_gamma,
    expected_tokens_per_step,
    speculative_speedup,
    verify_step_costs,
    verify_step_time,
)
from llmperf.measured.cache import KVCache
from llmperf.measured.drafts import NgramDraft
from llmperf.measured.generate import generate
from llmperf.measured.model import Transformer
from llmperf.measured.speculative import speculative_generate, verify
from llmperf.models import ModelConfig

SIGNIFICANCE = 1e-6
VOCAB = 4
SAMPLES = 12_000


# ---------------------------------------------------------------- analytic


def test_expected_tokens_matches_the_paper_formula():
    for alpha in (0.0, 0.1, 0.5, 0.8, 0.99):
        for gamma in (1, 2, 4, 7):
            closed = (1 - alpha ** (gamma + 1)) / (1 - alpha)
            assert expected_tokens_per_step(alpha, gamma) == pytest.approx(closed, rel=1e-12)
    # 1 + 0.8 + 0.64 + 0.512 + 0.4096
    assert expected_tokens_per_step(0.8, 4) == pytest.approx(3.3616, abs=1e-12)


def test_expected_tokens_at_the_limits():
    assert expected_tokens_per_step(0.0, 5) == 1.0  # every draft rejected: the target's own
    assert expected_tokens_per_step(1.0, 5) == 6.0  # every draft kept: gamma + 1, no 0/0
    assert expected_tokens_per_step(1 - 1e-12, 5) == pytest.approx(6.0, rel=1e-9)


def test_speedup_divides_by_the_draft_cost():
    assert speculative_speedup(0.8, 4, 0.1) == pytest.approx(3.3616 / 1.4, rel=1e-12)
    assert speculative_speedup(0.8, 4, 0.0) == expected_tokens_per_step(0.8, 4)


@pytest.mark.parametrize("alpha,cost", [(0.8, 0.05), (0.6, 0.2), (0.9, 0.01), (0.5, 0.5),
                                        (0.3, 0.29), (0.95, 0.0)])
def test_best_gamma_is_the_argmax(alpha, cost):
    g = best_gamma(alpha, cost, max_gamma=40)
    values = [(1 - alpha ** (k + 1)) / (1 - alpha) / (k * cost + 1) for k in range(1, 41)]
    top = max(values)
    if top <= 1:
        assert g == 0
    else:
        assert values[g - 1] == pytest.approx(top, rel=1e-12)
        assert all(v < top * (1 - 1e-12) for v in values[:g - 1])  # the smallest on a tie


def test_speculation_pays_exactly_when_alpha_exceeds_c():
    for alpha in (0.05, 0.2, 0.5, 0.7, 0.9):
        for cost in (0.0, 0.1, 0.3, 0.5, 0.8):
            assert (best_gamma(alpha, cost) > 0) == (alpha > cost), (alpha, cost)


def test_acceptance_rate_is_the_share_of_examined_drafts_kept():
    assert acceptance_rate(3, 1) == 0.75
    with pytest.raises(ValueError, match="accepted"):
        acceptance_rate(0, 0)


@pytest.mark.parametrize("kwargs,name", [
    (dict(alpha=-0.1, gamma=2), "alpha"), (dict(alpha=1.01, gamma=2), "alpha"),
    (dict(alpha=float("nan"), gamma=2), "alpha"), (dict(alpha=0.5, gamma=0), "gamma"),
    (dict(alpha=0.5, gamma=1.5), "gamma"), (dict(alpha=0.5, gamma=-1), "gamma")])
def test_expectations_reject_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        expected_tokens_per_step(**kwargs)
    with pytest.raises(ValueError, match=name):
        speculative_speedup(cost_ratio=0.1, **kwargs)


def test_negative_cost_ratio_rejected():
    with pytest.raises(ValueError, match="cost_ratio"):
        speculative_speedup(0.5, 2, -0.1)
    with pytest.raises(ValueError, match="cost_ratio"):
        best_gamma(0.5, -1.0)


def test_verification_costs_one_decode_step_at_batch_1_and_gamma_plus_1_when_compute_bound():
    one = verify_step_time("llama-3-8b", "H100 SXM", 1, 1, 512)
    five = verify_step_time("llama-3-8b", "H100 SXM", 1, 5, 512)
    assert five == pytest.approx(one, rel=0.01)  # memory bound: the weights dominate
    big1 = verify_step_time("llama-3-8b", "H100 SXM", 2048, 1, 128)
    big5 = verify_step_time("llama-3-8b", "H100 SXM", 2048, 5, 128)
    assert big5 / big1 > 4.0  # compute bound: five times the FLOPs, nearly five times the time
    assert big5 / big1 < 5.0  # each sequence's KV cache is read once for all five positions
    small = batched_speculative_speedup("llama-3-8b", "H100 SXM", 1, 0.8, 4, 0.05)
    large = batched_speculative_speedup("llama-3-8b", "H100 SXM", 2048, 0.8, 4, 0.05, context=128)
    assert small == pytest.approx(speculative_speedup(0.8, 4, 0.05), rel=0.01)
    assert large < 1.0


@pytest.mark.parametrize("model", ["llama-3-8b", "mixtral-8x7b", "mistral-7b", "gpt2"])
def test_a_one_token_append_is_the_decode_step_of_step_costs(model):
    for batch, context in ((1, 512), (64, 2048)):
        for attention in ("standard", "fused"):
            step = step_costs(model, "decode", batch, context, attention=attention)
            one = verify_step_costs(model, batch, 1, context, attention=attention)
            assert one.total == step.total
            assert verify_step_time(model, "H100 SXM", batch, 1, context, attention=attention) \
                == decode_step_time(model, "H100 SXM", context, batch, attention=attention)


def test_an_append_counts_the_tokens_of_every_position_and_reads_the_cache_once():
    """Llama 3 8B (32 layers, 32 query heads of 128, 8 KV heads), 2 sequences, 5 new tokens
    each after 100 cached: the products are those of a 10-token step; the scores are
    5 x 105 per head; K is read once per sequence and KV head."""
    B, T, C, L = 2, 5, 100, 32
    append = verify_step_costs("llama-3-8b", B, T, C)
    ten = step_costs("llama-3-8b", "decode", B * T, C)
    for name in ("q_proj", "ffn_up", "ffn_down", "lm_head"):  # logits at every position
        assert append[name].cost == ten[name].cost
    assert append["qk"].flops == 2 * 128 * T * (C + T) * 32 * B * L
    k_bytes = B * 8 * (C + T) * 128 * 2 * L  # fp16 keys, read once
    q_s_bytes = B * 32 * (T * 128 + T * (C + T)) * 2 * L  # Q read, S written
    assert append["qk"].bytes == k_bytes + q_s_bytes
    assert append["qk"].bytes < ten["qk"].bytes  # ten one-token steps would read K ten times


def test_an_moe_verification_touches_more_experts_than_a_decode_step():
    """Mixtral (E = 8, k = 2) at batch 1: 5 positions touch 8 (1 - (3/4)^5) = 6.1 experts per
    layer against 2, so the memory-bound verification costs well over one decode step."""
    one = verify_step_costs("mixtral-8x7b", 1, 1, 512)
    five = verify_step_costs("mixtral-8x7b", 1, 5, 512)
    expert_bytes = 3 * 4096 * 14336 * 2 * 32  # one expert in every layer, fp16
    extra = five.block_total("ffn").bytes - one.block_total("ffn").bytes
    assert extra == pytest.approx((8 * (1 - 0.75 ** 5) - 2) * expert_bytes, rel=0.01)
    ratio = verify_step_time("mixtral-8x7b", "H200 SXM", 1, 5, 512) \
        / verify_step_time("mixtral-8x7b", "H200 SXM", 1, 1, 512)
    assert ratio > 2
    assert batched_speculative_speedup("mixtral-8x7b", "H200 SXM", 1, 0.8, 4, 0.05) \
        < 0.5 * speculative_speedup(0.8, 4, 0.05)


@pytest.mark.parametrize("kwargs,name", [
    (dict(batch=0, tokens_per_sequence=2, context=8), "batch"),
    (dict(batch=1, tokens_per_sequence=0, context=8), "tokens_per_sequence"),
    (dict(batch=1, tokens_per_sequence=2, context=0), "context")])
def test_append_costs_reject_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        verify_step_costs("llama-3-8b", **kwargs)


# ---------------------------------------------------------------- verify: input checks


def _probs(rows, seed=0, vocab=VOCAB):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, vocab, generator=g, dtype=torch.float64).softmax(-1)


@pytest.mark.parametrize("target,draft,tokens,name", [
    (_probs(2), _probs(2), [0, 1], "target_probs"),        # target needs gamma + 1 rows
    (_probs(3), _probs(2, vocab=5), [0, 1], "target_probs"),  # vocabularies differ
    (_probs(3), _probs(2), [0, 1, 2], "draft_probs"),      # gamma from tokens: 3 rows wanted
    (_probs(1), _probs(0), [], "draft_tokens"),            # gamma = 0
    (_probs(3), _probs(2), [[0, 1]], "draft_tokens"),      # not 1-d
    (_probs(3), _probs(2), [0.0, 1.0], "draft_tokens"),    # not integers
    (_probs(3), _probs(2), [0, 4], "draft_tokens"),        # out of the vocabulary
    (_probs(3) * 1.1, _probs(2), [0, 1], "target_probs"),  # rows do not sum to 1
    (_probs(3), _probs(2) * 0.5, [0, 1], "draft_probs"),
    (_probs(3) - 0.3, _probs(2), [0, 1], "target_probs"),  # negative
    (_probs(3).fill_(float("nan")), _probs(2), [0, 1], "target_probs"),
    (_probs(3), torch.eye(VOCAB, dtype=torch.float64)[:2], [1, 0], "draft_probs"),  # q(x) = 0
])
def test_verify_rejects_bad_input(target, draft, tokens, name):
    with pytest.raises(ValueError, match=name):
        verify(target, draft, tokens, generator=torch.Generator().manual_seed(0))


def test_verify_keeps_drafts_the_target_agrees_with():
    eye = torch.eye(VOCAB, dtype=torch.float64)
    # target certain of 2, 3, then 1; the draft proposed 2, 3: both kept, then the target's 1
    assert verify(eye[[2, 3, 1]], eye[[2, 3]], [2, 3]) == [2, 3, 1]
    # the draft proposed 0 where the target is certain of 3: rejected, 3 from max(0, p - q)
    assert verify(eye[[2, 3, 1]], eye[[2, 0]], [2, 0]) == [2, 3]


# ---------------------------------------------------------------- verify: distribution


def chi_square_p_value(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square statistic, cells with expected count < 5 pooled."""
    n = counts.sum()
    expected = expected_probs.double() * n
    small = expected < 5
    if small.any():
        counts = torch.cat([counts[~small], counts[small].sum().view(1)])
        expected = torch.cat([expected[~small], expected[small].sum().view(1)])
        if expected[-1] < 5:  # the pool itself too small: fold it into the largest cell
            big = int(expected[:-1].argmax())
            counts[big] += counts[-1]
            expected[big] += expected[-1]
            counts, expected = counts[:-1], expected[:-1]
    stat = float(((counts.double() - expected) ** 2 / expected).sum())
    dof = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def _bigram_tables(seed: int) -> torch.Tensor:
    """A toy language model: row a is the next-token distribution after token a."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(VOCAB, VOCAB, generator=g, dtype=torch.float64) * 3).softmax(-1)


TARGET = _bigram_tables(1)
DRAFTS = {"far": TARGET.roll(1, dims=1),  # each row's probabilities moved one id along
          "close": 0.9 * TARGET + 0.1 / VOCAB}
NEW_TOKENS = 3


def sample_sequence(target, draft, gamma, gen, verifier=verify) -> list[int]:
    """NEW_TOKENS tokens after token 0, speculating with bigram tables for both models."""
    seq = [0]
    while len(seq) <= NEW_TOKENS:
        drafts, context = [], seq[-1]
        for _ in range(gamma):
            context = int(torch.multinomial(draft[context], 1, generator=gen))
            drafts.append(context)
        prev = [seq[-1]] + drafts
        seq += verifier(target[prev], draft[prev[:-1]], drafts, generator=gen)
    return seq[1:NEW_TOKENS + 1]


def exact_sequence_probs(target) -> torch.Tensor:
    """P(x1, x2, x3) under the target alone, flattened as x1 * V^2 + x2 * V + x3."""
    probs = torch.zeros(VOCAB ** NEW_TOKENS, dtype=torch.float64)
    for code in range(VOCAB ** NEW_TOKENS):
        x = [code // VOCAB ** (NEW_TOKENS - 1 - i) % VOCAB for i in range(NEW_TOKENS)]
        probs[code] = TARGET[0, x[0]] * TARGET[x[0], x[1]] * TARGET[x[1], x[2]]
    return probs


def _counts(draft, gamma, seed, verifier=verify):
    gen = torch.Generator().manual_seed(seed)
    first = torch.zeros(VOCAB, dtype=torch.int64)
    joint = torch.zeros(VOCAB ** NEW_TOKENS, dtype=torch.int64)
    for _ in range(SAMPLES):
        x = sample_sequence(TARGET, draft, gamma, gen, verifier)
        first[x[0]] += 1
        joint[x[0] * VOCAB ** 2 + x[1] * VOCAB + x[2]] += 1
    return first, joint


@pytest.mark.parametrize("gamma", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["far", "close"])
def test_verify_keeps_the_target_distribution(kind, gamma):
    first, joint = _counts(DRAFTS[kind], gamma, seed=100 * gamma + len(kind))
    assert chi_square_p_value(first, TARGET[0]) > SIGNIFICANCE  # the first emitted token
    assert chi_square_p_value(joint, exact_sequence_probs(TARGET)) > SIGNIFICANCE  # all three


def _resample_from_target(target_probs, draft_probs, draft_tokens, generator=None):
    """A plausible mistake: on a rejection, draw from p itself instead of max(0, p - q)."""
    out = []
    for i, x in enumerate(draft_tokens):
        if float(torch.rand(1, generator=generator, dtype=torch.float64)) * draft_probs[i, x] \
                < target_probs[i, x]:
            out.append(int(x))
            continue
        return out + [int(torch.multinomial(target_probs[i], 1, generator=generator))]
    return out + [int(torch.multinomial(target_probs[-1], 1, generator=generator))]


def test_chi_square_detects_a_wrong_verifier():
    first, joint = _counts(DRAFTS["far"], 2, seed=7, verifier=_resample_from_target)
    assert chi_square_p_value(first, TARGET[0]) < SIGNIFICANCE
    assert chi_square_p_value(joint, exact_sequence_probs(TARGET)) < SIGNIFICANCE


def test_acceptance_is_the_overlap_of_the_distributions():
    """Leviathan et al.: a draft is accepted with probability sum_x min(p(x), q(x))."""
    gen = torch.Generator().manual_seed(5)
    p, q = TARGET[:1].repeat(2, 1), DRAFTS["far"][:1]
    kept = 0
    for _ in range(SAMPLES):
        x = int(torch.multinomial(q[0], 1, generator=gen))
        kept += len(verify(p, q, [x], generator=gen)) - 1
    alpha = float(torch.minimum(p[0], q[0]).sum())
    sd = math.sqrt(alpha * (1 - alpha) / SAMPLES)
    assert abs(kept / SAMPLES - alpha) < 5.3 * sd  # two-sided normal tail at 5.3 sd: about 1e-7


# ---------------------------------------------------------------- the generation loop


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("safetensors")
    from llmperf.trained import load, validation_tokens

    target, draft = load("target"), load("draft")
    return target.model, draft.model, validation_tokens(target.tokenizer)


PROMPTS = [(0, 48), (20_000, 8), (31_000, 1)]  # (offset in the text, length)


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_greedy_speculation_equals_greedy_decoding(trained, gamma):
    target, draft, text = trained
    for start, length in PROMPTS:
        prompt = text[start:start + length].tolist()
        plain = generate(target, prompt, 80).tokens[0].tolist()
        assert speculative_generate(target, draft, prompt, 80, gamma=gamma).tokens == plain
        assert speculative_generate(target, NgramDraft(), prompt, 80, gamma=gamma).tokens == plain


@pytest.fixture
def poisoned_caches(monkeypatch):
    """Every cache rollback fills the positions past the kept prefix with NaN: a forward pass
    that read a rejected draft's keys or values would turn the logits into NaN."""
    def poison(cache, length):
        cache.k[:, :, :, length:] = float("nan")
        cache.v[:, :, :, length:] = float("nan")
    monkeypatch.setattr(KVCache, "rollback", poison)


def test_rolled_back_positions_are_never_read(trained, poisoned_caches):
    target, draft, text = trained
    prompt = text[5_000:5_040].tolist()
    plain = generate(target, prompt, 60).tokens[0].tolist()
    assert speculative_generate(target, draft, prompt, 60, gamma=4).tokens == plain
    sampled = speculative_generate(target, draft, prompt, 60, gamma=4, temperature=1.0, seed=1)
    assert sampled.alpha < 1  # some drafts were rejected, so some positions were rolled back
    assert len(sampled.tokens) == 60


def test_sampled_generation_counts_are_consistent(trained):
    target, draft, text = trained
    out = speculative_generate(target, draft, text[:32].tolist(), 50, gamma=3, temperature=1.0,
                               seed=2)
    assert len(out.tokens) == 50
    assert sum(out.accepted) + out.target_steps == 50  # each step: its accepted drafts + 1
    assert all(0 <= a <= p <= 3 for a, p in zip(out.accepted, out.proposed))
    assert out.tokens_per_step == pytest.approx(50 / out.target_steps)
    by_position = out.alpha_by_position(3)
    assert all(a is None or 0 <= a <= 1 for a in by_position)


@pytest.mark.parametrize("kind", ["model greedy", "model sampled", "lookup"])
def test_time_breakdown_parts_are_non_negative_and_sum_to_the_total(trained, kind):
    target, draft, text = trained
    drafter = NgramDraft() if kind == "lookup" else draft
    start = time.perf_counter()
    out = speculative_generate(target, drafter, text[:40].tolist(), 40, gamma=3,
                               temperature=1.0 if kind == "model sampled" else 0.0, seed=3)
    outside = time.perf_counter() - start
    n = out.target_steps
    assert len(out.step_s) == len(out.target_forward_s) == len(out.draft_forward_s) == n
    parts = out.time_breakdown()
    assert all(v >= 0 for v in parts.values()) and out.prefill_s >= 0
    assert all(t > 0 for t in out.target_forward_s)  # a forward pass in every step
    assert all(h >= 0 for h in out.host_s)
    assert sum(parts.values()) == pytest.approx(out.elapsed_s, rel=1e-9)
    assert 0 < out.elapsed_s <= outside  # the clock ran inside the call
    if kind == "lookup":
        assert parts["draft forward"] == 0
    else:  # the draft model runs in every step that proposed drafts, and only there
        assert all((d > 0) == (p > 0) for d, p in zip(out.draft_forward_s, out.proposed))


def test_time_breakdown_puts_each_delay_where_it_happened(monkeypatch):
    """Sleep in the target's forward, in the draft's, and in verification: each step's
    recorded parts must hold at least the sleeps that happened in them (lower bounds, which
    hold however busy the machine)."""
    target, draft = _tiny(1, 60.0), _tiny(2, 60.0)
    s_target, s_draft, s_verify = 0.004, 0.002, 0.006
    target.register_forward_pre_hook(lambda *_: time.sleep(s_target))
    draft.register_forward_pre_hook(lambda *_: time.sleep(s_draft))
    original = sg._verify

    def slow_verify(*args):
        time.sleep(s_verify)
        return original(*args)

    monkeypatch.setattr(sg, "_verify", slow_verify)
    out = speculative_generate(target, draft, [1, 3, 0, 2], 10, gamma=3)
    assert sum(out.proposed) > 0
    for p, t, d, h in zip(out.proposed, out.target_forward_s, out.draft_forward_s, out.host_s):
        assert t >= s_target
        assert d >= p * s_draft  # one draft forward pass per proposed token
        assert h >= (s_verify if p else 0)
    assert out.prefill_s >= s_target + s_draft  # both models' prefills


def _tiny(seed: int, scale: float) -> Transformer:
    config = ModelConfig(name=f"tiny-{seed}", n_layers=1, d_model=16, n_heads=2, d_ff=32,
                         vocab_size=VOCAB, max_seq_len=16)
    model = Transformer(config, seed=seed)
    head = model.tok_embeddings if model.output is None else model.output
    head.weight.mul_(scale)  # sharper, distinct next-token distributions
    return model


def test_sampled_generation_keeps_the_target_distribution():
    """The whole loop (draft model, caches, verification) against the target's exact joint
    distribution of two new tokens, computed without a cache."""
    target, draft = _tiny(1, 60.0), _tiny(2, 60.0)
    prompt = [1, 3, 0]
    with torch.inference_mode():
        first = target(torch.tensor([prompt]))[0, -1].softmax(-1).double()
        seconds = target(torch.tensor([prompt + [x] for x in range(VOCAB)]))[:, -1].softmax(-1)
    exact = (first[:, None] * seconds.double()).flatten()
    counts = torch.zeros(VOCAB ** 2, dtype=torch.int64)
    for seed in range(2_000):
        x = speculative_generate(target, draft, prompt, 2, gamma=2, temperature=1.0,
                                 seed=seed).tokens
        counts[x[0] * VOCAB + x[1]] += 1
    assert chi_square_p_value(counts, exact) > SIGNIFICANCE


def test_ngram_lookup_proposes_what_followed_the_suffix():
    draft = NgramDraft(max_ngram=2)
    assert draft.lookup([5, 6, 7, 8, 1, 5, 6], 3) == [7, 8, 1]
    assert draft.lookup([1, 2, 3], 3) == []             # no earlier occurrence of any suffix
    assert draft.lookup([4, 4, 4, 4], 2) == [4, 4]      # the latest match followed by 2 tokens
    with pytest.raises(ValueError, match="min_ngram"):
        NgramDraft(max_ngram=1, min_ngram=2)


def test_generation_rejects_bad_input(trained):
    target, draft, _ = trained
    with pytest.raises(ValueError, match="gamma"):
        speculative_generate(target, draft, [1, 2], 5, gamma=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        speculative_generate(target, draft, [1, 2], 0)
    with pytest.raises(ValueError, match="draft"):
        speculative_generate(target, "draft", [1, 2], 5)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(target, _tiny(0, 1.0), [1, 2], 5)
    with pytest.raises(ValueError, match="max_seq_len"):
        speculative_generate(target, draft, [1] * 200, 100)


def test_compare_reports_consistent_rows():
    from llmperf.measured.experiments import compare

    target, draft = _tiny(1, 60.0), _tiny(2, 60.0)
    rows = compare(target, {"model": draft, "lookup": NgramDraft()}, [[1, 2, 3, 0, 1, 2]], 8,
                   [1, 2], temperature=0.0, rounds=1, context=4)
    assert [(r.draft, r.gamma) for r in rows] == [("model", 1), ("model", 2), ("lookup", 1),
                                                  ("lookup", 2)]
    for r in rows:
        assert r.identical is True  # greedy: the same tokens as plain decoding
        assert 0 <= r.alpha <= 1 and 1 <= r.tokens_per_step <= r.gamma + 1
        assert r.predicted_tokens_per_step == expected_tokens_per_step(r.alpha, r.gamma)
        assert r.predicted_speedup == pytest.approx(
            speculative_speedup(r.alpha, r.gamma, r.c))
        assert r.speedup == pytest.approx(r.tokens_per_s / r.plain_tokens_per_s)
        parts = (r.prefill_s_per_token, r.target_forward_s_per_token,
                 r.draft_forward_s_per_token, r.host_s_per_token)
        assert all(v >= 0 for v in parts) and r.target_step_s > 0
        assert sum(parts) == pytest.approx(r.spec_s_per_token, rel=1e-9)
        assert r.predicted_forward_s_per_token == pytest.approx(
            (r.gamma * r.c + r.verify_ratio) * r.target_step_s / r.tokens_per_step)
        assert r.unexplained_s_per_token == pytest.approx(
            r.target_forward_s_per_token + r.draft_forward_s_per_token
            - r.predicted_forward_s_per_token, abs=1e-12)
        assert math.prod(r.speedup_factors().values()) == pytest.approx(r.speedup, rel=1e-9)
    assert all(r.c == 0 and r.draft_forward_s_per_token == 0 for r in rows if r.draft == "lookup")
    assert all(r.c > 0 for r in rows if r.draft == "model")


def test_step_after_other_times_only_the_model():
    """The model's step sleeps 2 ms, the other's 20 ms: both timings hold the model's sleep,
    and neither holds the other model's steps (2 x 20 ms before each timed step)."""
    from llmperf.measured.experiments import step_after_other_s

    model, other = _tiny(1, 1.0), _tiny(2, 1.0)
    model.register_forward_pre_hook(lambda *_: time.sleep(0.002))
    other.register_forward_pre_hook(lambda *_: time.sleep(0.02))
    alone, after = step_after_other_s(model, other, other_calls=2, context=4, repeat=3, rounds=1)
    assert 0.002 <= alone < 0.02 and 0.002 <= after < 0.02
    with pytest.raises(ValueError, match="other_calls"):
        step_after_other_s(model, other, other_calls=0)

