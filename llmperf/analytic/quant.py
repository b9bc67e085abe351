"""Sizes of weight-only quantized models and of an int8 KV cache, and the decode speedup
their bytes alone predict.

Symmetric quantization with b bits keeps, for each group of g consecutive weights of one
output row (g = the whole row when quantizing per output channel), one scale

    s = max|w| / q_max,   q_max = 2^(b-1) - 1   (127 for int8, 7 for int4),

and stores each weight as the integer q = round(w / s) in [-q_max, q_max]. Rounding moves a
weight by at most s / 2, so the largest weight of a group sets the error of all the others.

Bytes of a (rows, cols) matrix: rows * ceil(cols' * b / 8) for the codes plus
rows * cols' / g scales, where cols' is cols rounded up to a whole number of groups (the
padding is stored). Per parameter, about b / 8 + scale bytes / g. A layout may keep a zero
point beside each scale (PyTorch's int4 kernels do, even for a symmetric scheme):
`zero_points=True` counts it.

Torch-free: `llmperf.measured.quant` does the quantizing; this module counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_positive, normalize_dtype, storage_bytes
from .layers import step_costs

QUANT_BITS = (4, 8)
INT8_SCALE_BYTES = 2  # one fp16 scale per token, head, and K or V of the int8 KV cache


def check_bits(bits: int) -> None:
    """ValueError unless bits is one of QUANT_BITS."""
    if isinstance(bits, bool) or bits not in QUANT_BITS:
        raise ValueError(f"bits must be one of {QUANT_BITS}, got {bits!r}")


def check_group_size(group_size: int | None) -> None:
    """ValueError unless group_size is None (per output channel) or a positive integer."""
    if group_size is not None:
        check_positive("group_size", group_size, integer=True)


def q_max(bits: int) -> int:
    """Largest code of symmetric b-bit quantization: 2^(b-1) - 1 (127 for 8 bits, 7 for 4)."""
    check_bits(bits)
    return 2 ** (bits - 1) - 1


def symmetric_scale(max_abs: float, bits: int) -> float:
    """s = max|w| / q_max: the step between neighbouring representable values."""
    if not (isinstance(max_abs, (int, float)) and math.isfinite(max_abs) and max_abs >= 0):
        raise ValueError(f"max_abs must be a finite number >= 0, got {max_abs!r}")
    return max_abs / q_max(bits)


def max_rounding_error(max_abs: float, bits: int) -> float:
    """Largest |w - s * round(w / s)| in a group whose largest magnitude is max_abs: s / 2."""
    return symmetric_scale(max_abs, bits) / 2


@dataclass(frozen=True)
class QuantScheme:
    """b-bit codes, one scale (in scale_dtype) per group of group_size weights of a row.

    group_size None: one scale per output row (per channel).
    """

    bits: int
    group_size: int | None = None
    scale_dtype: str = "fp32"
    zero_points: bool = False

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_group_size(self.group_size)
        object.__setattr__(self, "scale_dtype", normalize_dtype(self.scale_dtype))

    @property
    def code_dtype(self) -> str:
        """The dtype of the codes, as `llmperf.units` names it: "int8" or "int4"."""
        return f"int{self.bits}"

    @property
    def name(self) -> str:
        grouping = "per channel" if self.group_size is None else f"group {self.group_size}"
        return f"int{self.bits}, {grouping}"

    def group_of(self, cols: int) -> int:
        """Weights that share a scale in a row of `cols` weights."""
        check_positive("cols", cols, integer=True)
        return int(cols) if self.group_size is None else int(self.group_size)

    def scale_bytes(self) -> float:
        """Bytes kept per group: the scale, and the zero point if the layout has one."""
        return bytes_per_element(self.scale_dtype) * (2 if self.zero_points else 1)

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes of a (rows, cols) matrix: codes (padded to whole groups) plus scales."""
        check_positive("rows", rows, integer=True)
        g = self.group_of(cols)
        groups = math.ceil(cols / g)
        codes = int(rows) * storage_bytes(groups * g, self.code_dtype)  # packed within a row
        return codes + int(rows * groups * self.scale_bytes())

    def bytes_per_param(self, cols: int) -> float:
        """Bytes per weight of a row of `cols` weights: about bits / 8 + scale bytes / g."""
        return self.matrix_bytes(1, cols) / cols


def linear_shapes(model: ModelConfig | str) -> list[tuple[str, int, int, int]]:
    """(name, in_features, out_features, count) of every nn.Linear of the reference model.

    Those are the matrices a weight-only scheme quantizes; the embedding (a lookup) and the
    norms stay in the model's dtype, and a tied LM head reuses the embedding.
    """
    m = get_model(model)
    ffn = ([("w13", m.d_model, 2 * m.d_ff), ("w2", m.d_ff, m.d_model)] if m.ffn_kind == "swiglu"
           else [("w1", m.d_model, m.d_ff), ("w2", m.d_ff, m.d_model)])
    shapes = [("wqkv", m.d_model, m.q_dim + 2 * m.kv_dim, m.n_layers),
              ("wo", m.q_dim, m.d_model, m.n_layers)]
    shapes += [(name, k, n, m.n_layers * m.n_experts) for name, k, n in ffn]
    if m.is_moe:
        shapes.append(("router", m.d_model, m.n_experts, m.n_layers))
    if not m.tied_embeddings:
        shapes.append(("output", m.d_model, m.vocab_size, 1))
    return shapes


def linear_params(model: ModelConfig | str) -> int:
    """Weights of all the nn.Linear matrices (no biases)."""
    return sum(k * n * count for _, k, n, count in linear_shapes(model))


def quantized_linear_bytes(model: ModelConfig | str, scheme: QuantScheme) -> int:
    """Bytes of all the nn.Linear weights under `scheme`."""
    return sum(count * scheme.matrix_bytes(n, k) for _, k, n, count in linear_shapes(model))


def quantized_model_bytes(model: ModelConfig | str, scheme: QuantScheme | None,
                          dtype: str = "fp32") -> int:
    """Bytes of a model whose linear weights follow `scheme` and the rest is in `dtype`.

    scheme None: every parameter in `dtype` (`ModelConfig.weight_bytes`).
    Assumes no biases (the reference models have none).
    """
    m = get_model(model)
    if scheme is None:
        return m.weight_bytes(dtype)
    rest = m.param_count() - linear_params(m)
    return quantized_linear_bytes(m, scheme) + math.ceil(rest * bytes_per_element(dtype))


def decode_step_bytes(model: ModelConfig | str, scheme: QuantScheme | None, context: int,
                      dtype: str = "fp32") -> float:
    """Bytes one batch-1 decode step reads and writes with `context` cached tokens.

    `step_costs(model, "decode", 1, context, dtype)` (weights, KV cache and activations, all in
    `dtype`) with the linear weights' bytes replaced by their quantized bytes. Dense models
    only: an MoE step reads only the experts its token chose, which this count does not split.
    """
    m = get_model(model)
    if m.is_moe:
        raise ValueError(f"model must be dense (n_experts 1) for decode_step_bytes, "
                         f"got {m.name} with {m.n_experts} experts")
    step = step_costs(m, "decode", batch=1, seq_len=context, dtype=dtype)
    if scheme is None:
        return step.total.bytes
    dense_weights = linear_params(m) * bytes_per_element(dtype)
    return step.total.bytes - dense_weights + quantized_linear_bytes(m, scheme)


def predicted_decode_speedup(model: ModelConfig | str, scheme: QuantScheme | None,
                             context: int, dtype: str = "fp32", baseline: str = "fp32") -> float:
    """Speedup of batch-1 decode over `baseline` if step time were bytes / bandwidth alone.

    decode_step_bytes(baseline) / decode_step_bytes(scheme, dtype): the same bandwidth on
    both sides cancels, so no accelerator is needed. scheme None with dtype "bf16" is the
    plain bf16 model.
    """
    return (decode_step_bytes(model, None, context, baseline)
            / decode_step_bytes(model, scheme, context, dtype))


def int8_kv_bytes_per_token(config: ModelConfig) -> int:
    """KV bytes per token of the int8 cache: 2 L h_kv (d_head + 2), the codes and one fp16
    scale for each of K and V in every layer and KV head (against 2 L h_kv d_head b_kv in
    a dtype of b_kv bytes, `ModelConfig.kv_bytes_per_token`)."""
    return 2 * config.n_layers * config.n_kv_heads * (config.d_head + INT8_SCALE_BYTES)
