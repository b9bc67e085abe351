"""What a batch needs in memory, whether it fits, and the estimates that say so.

Expected values are counted by hand: Llama 2 7B has 6,738,415,616 parameters (13,476,831,232
bytes in fp16), 524,288 bytes of KV per token, D = 4096, 32 heads, d_ff = 11008, V = 32000;
an A10 has 24 GiB = 25,769,803,776 bytes, of which 15/16 = 24,159,191,040 with ECC on.
"""

import warnings

import pytest

import llmperf as lp
from llmperf.cli import main

WEIGHTS = 13_476_831_232
KV_PER_TOKEN = 524_288
A10_ECC, A10_FULL = 24_159_191_040, 25_769_803_776


def test_report_of_one_4k_sequence_on_an_a10():
    r = lp.memory_report("llama-2-7b", "A10", 1, 4096)
    assert r.weight_bytes == WEIGHTS
    assert r.kv_bytes == 4096 * KV_PER_TOKEN == 2 * lp.GiB
    # Standard attention: the residual stream and its normed copy, 2 * 4096 * 4096, and, the
    # largest stage, the queries 4096 * 4096 with S and P of 32 heads, 2 * 32 * 4096^2.
    assert r.activation_bytes == 2 * (2 * 4096 * 4096 + 4096 * 4096 + 2 * 32 * 4096**2)
    assert r.usable_bytes == A10_ECC and r.ecc
    assert r.needed_bytes == WEIGHTS + 2 * lp.GiB + 2_248_146_944
    assert r.free_bytes == A10_ECC - 17_872_461_824
    assert r.fits and r.weights_fit


def test_fused_attention_keeps_the_scores_out_of_the_activations():
    r = lp.memory_report("llama-2-7b", "A10", 1, 4096, attention="fused")
    # Without S and P the FFN stage is the largest: gate, up and their product, 3 x 4096 x 11008.
    assert r.activation_bytes == 2 * (2 * 4096 * 4096 + 3 * 4096 * 11008)
    # An MoE token's k = 2 experts each hold their hidden tensors.
    mixtral = lp.memory_report("mixtral-8x7b", "H100 SXM", 2, 100, attention="fused")
    assert mixtral.activation_bytes == 2 * (2 * 200 * 4096 + 3 * 200 * 2 * 14336)


def test_one_token_activations():
    # One token per sequence, 8 sequences. Llama 2 7B: the FFN stage, 3 x 8 x 11008 = 264,192,
    # still outweighs the logits, 8 x 32000 = 256,000.
    r = lp.memory_report("llama-2-7b", "A10", 8, 1)
    assert r.activation_bytes == 2 * (2 * 8 * 4096 + 3 * 8 * 11008)
    # GPT-2 (plain MLP of 3072: up and its activation; V = 50257): the logits win.
    r = lp.memory_report("gpt2", "A10", 8, 1)
    assert r.activation_bytes == 2 * (2 * 8 * 768 + 8 * 50257)


def test_fits_at_the_boundary_and_reserve():
    base = lp.memory_report("llama-2-7b", "A10", 1, 100)
    exact = base.free_bytes
    assert lp.memory_report("llama-2-7b", "A10", 1, 100, reserved_bytes=exact).fits
    assert not lp.memory_report("llama-2-7b", "A10", 1, 100, reserved_bytes=exact + 1).fits
    # ECC off gives the whole 24 GiB back on an A10; an HBM part is the same either way.
    assert lp.memory_report("llama-2-7b", "A10", 1, 100, ecc=False).usable_bytes == A10_FULL
    a100 = [lp.memory_report("llama-2-7b", "A100 SXM 80GB", 1, 100, ecc=e).usable_bytes
            for e in (True, False)]
    assert a100 == [80 * lp.GiB] * 2


def test_report_reads_as_a_table_and_a_line():
    r = lp.memory_report("llama-2-70b", "A10", 1, 500)
    assert not r.fits and not r.weights_fit
    line = r.summary()
    assert line.startswith("does not fit: needs ") and "of 24.16 GB usable (ECC on)" in line
    text = str(r)
    assert "does not fit" in text and "weights" in text and "short by" in text
    assert "KV cache (1 x 500 tokens, fp16)" in text
    assert lp.memory_report("llama-2-7b", "A10", 1, 500).summary().startswith("fits: needs ")
    assert r._repr_html_().startswith("<table>")


def test_a_model_that_does_not_fit_is_flagged_in_every_estimate():
    for estimate in (lp.simple_latency, lp.roofline_latency, lp.recompute_latency):
        est = estimate("llama-2-70b", "A10", 350, 4)
        assert est.fits is False and est.memory.weight_bytes == 2 * 68_976_648_192
        assert "fits=False" in repr(est) and "does not fit: needs" in str(est)
        est = estimate("llama-2-7b", "A10", 350, 4)
        assert est.fits is True and "fits=True" in repr(est)
    # No report, no verdict (an estimate built by hand, as chapter 2 does).
    assert lp.LatencyEstimate(1.0, 2.0, 3).fits is None


def test_a_request_is_checked_at_its_largest_cache():
    # 350 prompt + 150 output tokens: the cache holds 499 tokens at the last step, and the
    # activations are the 350-token prefill's.
    est = lp.roofline_latency("llama-2-7b", "A10", 350, 150, batch=3)
    assert est.memory.kv_bytes == 3 * 499 * KV_PER_TOKEN
    assert est.memory.activation_bytes == lp.activation_bytes("llama-2-7b", 3, 350)
    # 21 sequences of 100 + 901 tokens: a cache of 21 * 1000 * 524,288 = 11.01e9 B beside
    # 13.48e9 B of weights and 0.17e9 B of activations (the FFN stage of a 100-token prefill,
    # 2 * (2 * 2100 * 4096 + 3 * 2100 * 11008) B): 24.66e9 B, more than 24.16e9 usable with ECC
    # on, less than the 25.77e9 of the whole memory.
    on = lp.memory_report("llama-2-7b", "A10", 21, 1000, prefill_tokens=100)
    assert on.activation_bytes == 2 * (2 * 2100 * 4096 + 3 * 2100 * 11008)
    assert on.needed_bytes == 24_659_986_432 and not on.fits
    assert lp.memory_report("llama-2-7b", "A10", 21, 1000, ecc=False, prefill_tokens=100).fits


def test_prefill_time_warns_when_the_prefill_does_not_fit():
    with pytest.warns(lp.DoesNotFitWarning, match="does not fit: needs .* usable"):
        seconds = lp.prefill_time("llama-2-70b", "A10", 350)
    assert seconds > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lp.prefill_time("llama-2-7b", "A10", 350)


def test_estimate_command_says_what_does_not_fit(capsys):
    argv = ["estimate", "llama-2-7b", "A10", "--prompt-tokens", "100", "--output-tokens", "901",
            "--batch", "21"]
    assert main(argv) == 1  # a KV cache that does not fit is refused, as weights are
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("llmperf estimate: llama-2-7b on A10 does not fit: needs ")
    assert "of 24.16 GB = 22.50 GiB usable (ECC on)" in err
    # (24,159,191,040 - 13,476,831,232) / (1000 * 524,288) = 20.4, activations (8 MB each) aside
    assert "try --batch 20 (the most such sequences that fit" in err
    assert main([*argv, "--no-ecc"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" not in out and "memory, batch 21: fits: needs" in out
    assert "of 25.77 GB usable (ECC off)" in out
