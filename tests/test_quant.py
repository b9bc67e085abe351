"""Weight-only quantization: round-trip error bounds, sizes, packed kernels, the swapped model."""
import copy
import math

import pytest
import torch
from torch import nn

import llmperf as lp
from llmperf.analytic.quant import (
    QuantScheme,
    decode_step_bytes,
    linear_params,
    max_rounding_error,
    predicted_decode_speedup,
    q_max,
    quantized_model_bytes,
    symmetric_scale,
)
from llmperf.measured import quant
from llmperf.measured.model import Transformer
from llmperf.measured.quant import (
    QuantizedLinear,
    QuantizedWeight,
    kernel_for,
    kernel_report,
    kernels_used,
    model_bytes,
    pack_int4,
    predicted_rms_error,
    quantize,
    quantize_model,
    rms_error,
    unpack_int4,
)

SCHEMES = [(8, None), (8, 32), (4, None), (4, 32), (4, 64)]


def weights(rows=48, cols=256, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.02


def per_element_scale(q):
    """Each weight's scale, (rows, cols), from the (rows, groups) scales."""
    return q.scales.repeat_interleave(q.group_size, dim=1)


@pytest.mark.parametrize(("bits", "group_size"), SCHEMES)
def test_every_element_within_half_a_scale(bits, group_size):
    w = weights()
    q = quantize(w, bits, group_size)
    err = (w - q.dequantize()).abs()
    # half a step, and a few float32 ulps for computing w / s and s * q
    assert bool((err <= per_element_scale(q) * (0.5 + 1e-6)).all())
    assert int(q.codes().abs().max()) == q_max(bits)  # the largest weight of a group maps to q_max


def test_scale_is_max_abs_over_q_max_group_by_group():
    w = weights(rows=3, cols=8)
    q = quantize(w, bits=4, group_size=4)
    for r in range(3):
        for g in range(2):
            expected = float(w[r, 4 * g:4 * g + 4].abs().max()) / 7
            assert float(q.scales[r, g]) == pytest.approx(expected, rel=1e-6)
    per_channel = quantize(w, bits=8)
    assert per_channel.scales.shape == (3, 1)
    assert float(per_channel.scales[1, 0]) == pytest.approx(float(w[1].abs().max()) / 127, rel=1e-6)


@pytest.mark.parametrize(("bits", "group_size"), SCHEMES)
def test_representable_values_come_back_exactly(bits, group_size):
    gen = torch.Generator().manual_seed(1)
    top = q_max(bits)
    codes = torch.randint(-top, top + 1, (16, 64), generator=gen)
    codes[:, ::32] = top  # every group of 32 holds q_max, so s = 2^-3 exactly
    w = codes.float() * 0.125
    q = quantize(w, bits, group_size)
    assert torch.equal(q.codes().long(), codes)
    assert torch.equal(q.dequantize(), w)


def test_zero_groups_and_dtype():
    w = torch.zeros(4, 64, dtype=torch.bfloat16)
    w[0, 0] = 1.0
    q = quantize(w, bits=4, group_size=32)
    assert q.dequantize().dtype == torch.bfloat16
    assert torch.equal(q.dequantize(), w)
    assert float(q.scales[1, 0]) == 0.0


@pytest.mark.parametrize("cols", [1, 6, 7, 64])
def test_int4_packing_round_trips(cols):
    codes = torch.randint(-8, 8, (5, cols), generator=torch.Generator().manual_seed(cols),
                          dtype=torch.int8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (5, math.ceil(cols / 2))
    assert torch.equal(unpack_int4(packed, cols), codes)


def test_an_outlier_inflates_the_error_of_its_channel_only():
    w = weights(rows=2, cols=128)
    w_out = w.clone()
    w_out[0, 5] = 100 * float(w.abs().max())
    plain, spiked = quantize(w, 8), quantize(w_out, 8)
    rest = torch.ones(128, dtype=torch.bool)
    rest[5] = False
    err_plain = (w[0, rest] - plain.dequantize()[0, rest]).abs().mean()
    err_spiked = (w[0, rest] - spiked.dequantize()[0, rest]).abs().mean()
    assert err_spiked > 20 * err_plain  # the scale grew 100x: most weights now round to 0
    assert torch.equal(spiked.dequantize()[1], plain.dequantize()[1])  # the other row is untouched
    grouped = quantize(w_out, 8, group_size=32)  # with groups, only the outlier's group suffers
    assert torch.equal(grouped.dequantize()[0, 32:], quantize(w, 8, 32).dequantize()[0, 32:])


def test_smaller_groups_give_smaller_error_and_more_bytes():
    w = weights(rows=64, cols=512)
    errors = [rms_error(w, quantize(w, 4, g)) for g in (None, 256, 64, 16)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.75 * errors[0]
    sizes = [QuantScheme(4, g).matrix_bytes(64, 512) for g in (None, 256, 64, 16)]
    assert sizes == sorted(sizes)
    assert rms_error(w, quantize(w, 8)) < errors[-1] / 4  # 8 bits: a step 18x finer


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, 32), (4, None)])
def test_rms_error_is_a_uniform_rounding_error(bits, group_size):
    """On Gaussian weights the error is nearly uniform on [-s/2, s/2]: RMS s / sqrt(12)."""
    q = quantize(weights(rows=64, cols=1024), bits, group_size)
    measured = rms_error(weights(rows=64, cols=1024), q)
    assert measured == pytest.approx(predicted_rms_error(q), rel=0.05)


@pytest.mark.parametrize(("bits", "group_size", "cols"), [(8, None, 256), (4, None, 7),
                                                          (4, 32, 96), (8, 16, 64)])
def test_bytes_held_are_the_analytic_count(bits, group_size, cols):
    q = quantize(weights(rows=10, cols=cols), bits, group_size)
    assert q.nbytes == QuantScheme(bits, group_size, "fp32").matrix_bytes(10, cols)


def test_bytes_per_param_by_hand():
    assert QuantScheme(4, 32, "bf16").bytes_per_param(4096) == 0.5 + 2 / 32
    assert QuantScheme(8, None, "bf16").bytes_per_param(4096) == 1 + 2 / 4096
    assert QuantScheme(4, 32, "bf16", zero_points=True).bytes_per_param(4096) == 0.5 + 4 / 32
    # padding: 40 weights in groups of 32 store two whole groups (64 codes, 2 scales)
    assert QuantScheme(4, 32, "fp32").matrix_bytes(1, 40) == 32 + 8
    assert symmetric_scale(1.27, 8) == pytest.approx(0.01)
    assert max_rounding_error(0.7, 4) == pytest.approx(0.05)


@pytest.mark.parametrize(("bits", "group_size"), [(8, None), (4, 32), (4, 64), (4, 128)])
def test_packed_kernel_equals_reference(bits, group_size):
    lin = nn.Linear(256, 96, bias=True)
    torch.nn.init.normal_(lin.weight, std=0.02, generator=torch.Generator().manual_seed(2))
    op = "_weight_int8pack_mm" if bits == 8 else "_weight_int4pack_mm_for_cpu"
    if not hasattr(torch.ops.aten, op):
        pytest.skip(f"torch {torch.__version__} has no aten.{op}")
    assert kernel_for(bits, group_size or 256, 96, 256, torch.device("cpu")) == (op, None)
    packed = QuantizedLinear.from_linear(lin, bits, group_size, kernel="packed")
    ref = QuantizedLinear.from_linear(lin, bits, group_size, kernel="reference")
    assert packed.kernel.startswith("_weight_int") and ref.kernel == "reference"
    x = torch.randn(3, 5, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        y_ref, y_packed = ref(x), packed(x)
    assert y_packed.shape == y_ref.shape == (3, 5, 96) and y_packed.dtype == torch.float32
    # the packed kernels compute in bf16 (8 significant bits): about 0.4 % of the output's size
    assert float((y_packed - y_ref).abs().max()) < 1e-2 * float(y_ref.abs().max())
    with torch.inference_mode():  # and the reference path is the dequantized matmul
        exact = nn.functional.linear(x, ref.quantized_weight().dequantize(), lin.bias)
    assert torch.allclose(y_ref, exact, atol=1e-6)


def test_padding_to_whole_groups_keeps_the_result():
    lin = nn.Linear(40, 16, bias=False)
    q = QuantizedLinear.from_linear(lin, bits=4, group_size=32, kernel="reference")
    assert q.pad == 24 and q.quantized_weight().shape == (16, 64)
    x = torch.randn(2, 40)
    with torch.inference_mode():
        expected = x @ q.quantized_weight().dequantize()[:, :40].T
        assert torch.allclose(q(x), expected, atol=1e-6)


@pytest.mark.parametrize("bad", [3, 16, 0, True, "8"])
def test_bad_bits_rejected(bad):
    with pytest.raises(ValueError, match="bits"):
        quantize(weights(), bits=bad)
    with pytest.raises(ValueError, match="bits"):
        QuantScheme(bad)


@pytest.mark.parametrize("bad", [0, -32, 2.5, 48])
def test_bad_group_size_rejected(bad):
    with pytest.raises(ValueError, match="group_size"):
        quantize(weights(cols=256), bits=4, group_size=bad)


def test_bad_weights_and_kernels_rejected():
    with pytest.raises(ValueError, match="2-D floating"):
        quantize(torch.ones(8), bits=8)
    with pytest.raises(ValueError, match="2-D floating"):
        quantize(torch.ones(4, 8, dtype=torch.int32), bits=8)
    w = weights()
    w[0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        quantize(w, bits=8)
    lin = nn.Linear(10, 7)
    with pytest.raises(ValueError, match="kernel"):
        QuantizedLinear.from_linear(lin, 8, kernel="fast")
    with pytest.raises(ValueError, match="packed"):  # 10 inputs: no int8 CPU kernel takes it
        QuantizedLinear.from_linear(lin, 8, kernel="packed")


def test_linear_shapes_account_for_every_parameter():
    for name in lp.list_models():
        m = lp.get_model(name)
        if m.bias or m.norm != "rmsnorm":
            continue
        norms = m.param_breakdown()["norms"]
        assert linear_params(m) + m.embedding_params() + norms == m.param_count(), name


@pytest.fixture(scope="module")
def tiny():
    return Transformer("ref-tiny", max_seq_len=64, seed=0).eval()


@pytest.mark.parametrize(("bits", "group_size", "scheme"),
                         [(8, None, QuantScheme(8, None, "bf16")),
                          (4, 32, QuantScheme(4, 32, "bf16", zero_points=True))])
def test_swapped_model_holds_the_analytic_bytes(tiny, bits, group_size, scheme):
    q = quantize_model(copy.deepcopy(tiny), bits, group_size)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    op, _ = kernel_for(bits, group_size or 128, 256, 128, torch.device("cpu"))
    assert set(kernels_used(q)) == {op}
    assert model_bytes(q) == quantized_model_bytes(tiny.config, scheme)
    assert model_bytes(tiny) == tiny.config.weight_bytes("fp32")


def test_predicted_speedups_by_bytes():
    # bf16 halves every byte a step moves: exactly 2x over fp32
    assert predicted_decode_speedup("ref-medium", None, 128, dtype="bf16") == pytest.approx(2.0)
    # Llama 2 7B over fp16: int8 a little under 2x (scales, the KV cache and activations stay),
    # int4 in groups of 128 under 4x
    int8 = predicted_decode_speedup("llama-2-7b", QuantScheme(8, None, "fp16"), 512,
                                    dtype="fp16", baseline="fp16")
    int4 = predicted_decode_speedup("llama-2-7b", QuantScheme(4, 128, "fp16"), 512,
                                    dtype="fp16", baseline="fp16")
    assert 1.9 < int8 < 2.0 and 3.4 < int4 < 4.0
    assert decode_step_bytes("llama-2-7b", None, 512, "fp16") > lp.get_model(
        "llama-2-7b").weight_bytes("fp16") - lp.get_model("llama-2-7b").embedding_params() * 2
    with pytest.raises(ValueError, match="dense"):
        decode_step_bytes("mixtral-8x7b", QuantScheme(8), 512)


@pytest.fixture(scope="module")
def target():
    from llmperf.trained import load, validation_tokens
    t = load("target")
    return t, validation_tokens(t.tokenizer)


@pytest.mark.parametrize(("bits", "group_size", "min_agreement", "max_loss_rise"),
                         [(8, None, 0.97, 0.01), (4, 64, 0.85, 0.05)])
def test_quantized_target_predicts_like_fp32(target, bits, group_size, min_agreement,
                                             max_loss_rise):
    from llmperf.trained import agreement, evaluate
    t, tokens = target
    q = quantize_model(copy.deepcopy(t.model), bits, group_size)
    agree = agreement(q, t.model, tokens, max_windows=2)
    assert agree.greedy >= min_agreement
    base, quant = evaluate(t.model, tokens, max_windows=2), evaluate(q, tokens, max_windows=2)
    assert quant.loss_nats - base.loss_nats < max_loss_rise
    with torch.inference_mode():
        x = tokens[:64][None]
        logits, ref = q(x), t.model(x)
    assert float((logits - ref).abs().max()) < 0.1 * float(ref.abs().max())


def test_sizes_reject_bad_input():
    with pytest.raises(ValueError, match="max_abs"):
        symmetric_scale(-1.0, 8)
    with pytest.raises(ValueError, match="max_abs"):
        symmetric_scale(float("nan"), 4)
    with pytest.raises(ValueError, match="rows"):
        QuantScheme(8).matrix_bytes(0, 16)
    with pytest.raises(ValueError, match="cols"):
        QuantScheme(4, 32).matrix_bytes(4, 0)
    with pytest.raises(ValueError, match="dtype"):
        QuantScheme(4, 32, scale_dtype="fp7")


def test_the_size_module_is_torch_free():
    import subprocess
    import sys
    code = "import sys, llmperf.analytic.quant; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["ref-moe-tiny", "ref-tiny"])
def test_swapped_model_runs_every_layer_kind(name):
    """Router, experts and a GQA attention all swap; the logits stay close to fp32's."""
    model = Transformer(name, max_seq_len=32, seed=1).eval()
    q = quantize_model(copy.deepcopy(model), 8)
    tokens = torch.randint(0, model.config.vocab_size, (2, 16),
                           generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        ref, out = model(tokens), q(tokens)
    assert not any(isinstance(m, nn.Linear) for m in q.modules())
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())


def _linear(in_features, out_features):
    lin = nn.Linear(in_features, out_features, bias=False)
    torch.nn.init.normal_(lin.weight, std=0.02, generator=torch.Generator().manual_seed(5))
    return lin


@pytest.mark.parametrize(("shape", "bits", "group_size", "words"), [
    ((10, 16), 8, None, ["in_features 10", "16"]),         # the CPU int8 kernel's width rule
    ((256, 104), 4, 32, ["out_features 104", "16"]),      # the trained models' 104-word head
    ((256, 96), 8, 32, ["group_size", "32"]),             # int8 kernels: one scale per row
    ((256, 96), 4, 16, ["group_size", "16"]),             # int4 kernels: groups of 32..256
])
def test_auto_says_why_a_layer_fell_back(shape, bits, group_size, words):
    layer = QuantizedLinear.from_linear(_linear(*shape), bits, group_size, kernel="auto")
    assert layer.kernel == "reference"
    assert all(w in layer.fallback_reason for w in words), layer.fallback_reason
    assert "fallback_reason" in repr(layer)
    with pytest.raises(ValueError, match=words[0]):
        QuantizedLinear.from_linear(_linear(*shape), bits, group_size, kernel="packed")


def test_a_layer_on_a_device_without_kernels_says_so():
    w = QuantizedWeight(torch.empty(16, 32, dtype=torch.int8, device="meta"),
                        torch.empty(16, 1, device="meta"), 8, 32, (16, 32), torch.float32)
    layer = QuantizedLinear(w, 32, kernel="auto")
    assert layer.kernel == "reference" and "meta" in layer.fallback_reason


def test_a_missing_or_wrong_kernel_is_named(monkeypatch):
    if not hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        pytest.skip(f"torch {torch.__version__} has no aten._weight_int8pack_mm")
    monkeypatch.setitem(quant._PACKERS, "_weight_int8pack_mm", "_no_such_packer")
    missing = QuantizedLinear.from_linear(_linear(256, 96), 8)
    assert missing.kernel == "reference"
    assert missing.fallback_reason == f"torch {torch.__version__} has no aten._no_such_packer"
    monkeypatch.undo()
    real_pack = quant._pack

    def doubled_scales(q, op):  # a layout whose result is twice the reference's
        tensors = real_pack(q, op)
        return {**tensors, "packed_scales": tensors["packed_scales"] * 2}

    monkeypatch.setattr(quant, "_pack", doubled_scales)
    wrong = QuantizedLinear.from_linear(_linear(256, 96), 8)
    assert wrong.kernel == "reference" and "off the reference" in wrong.fallback_reason
    assert "_weight_int8pack_mm" in wrong.fallback_reason


def test_kernel_report_names_every_layer_and_its_reason():
    """The trained models' shapes: int4 in groups of 32 packs every layer but the 104-row head."""
    from llmperf.trained import model_config
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        pytest.skip(f"torch {torch.__version__} has no aten._weight_int4pack_mm_for_cpu")
    model = quantize_model(Transformer(model_config("target"), max_seq_len=8), 4, 32)
    report = kernel_report(model)
    assert len(report) == 4 * 4 + 1  # wqkv, wo, w13, w2 in each of 4 layers; the head
    head = report.pop("output")
    assert head[0] == "reference" and "out_features 104" in head[1]
    assert set(report.values()) == {("_weight_int4pack_mm_for_cpu", None)}
    ref = kernel_report(quantize_model(Transformer(model_config("draft"), max_seq_len=8), 8,
                                       kernel="reference"))
    assert set(ref.values()) == {("reference", None)}  # asked for: no fallback
