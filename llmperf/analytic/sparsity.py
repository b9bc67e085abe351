"""What smaller and sparser models save, counted: pruning, contextual sparsity, early exit.

Torch-free, like the rest of the analytic layer, and built on its functions: a structurally
pruned model is a smaller `ModelConfig` (so `param_count`, `weight_bytes` and `step_costs`
count it), and the FFN matmuls of a contextually sparse model are `grouped_matmul_cost` over
the neurons that are active.

Assumptions, stated once:
- Structured pruning removes the same number of FFN neurons and of attention heads from every
  layer (one `ModelConfig` describes every layer), keeping d_head: a head is removed whole.
- Contextual sparsity (an oracle that knows which FFN neurons are non-zero for a token):
  a token computes only its `active` neurons of each FFN matrix. In one step of `tokens`
  tokens, each weight row (column) of a neuron that any token needs is read once; with each
  token's active set drawn uniformly and independently, the expected number of distinct
  neurons read is d_ff (1 - (1 - a/d_ff)^tokens), the formula of MoE's expected experts
  (`llmperf.analytic.layers.experts_touched`) with every neuron an "expert" of width one.
- Early exit: a token leaves after layer l with probability p_l (a profile summing to 1).
  Alone it costs E[l] layers; in a batch that runs until its last token exits, the batch
  costs E[max over its tokens] layers (tokens exit independently).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_non_negative, check_positive, normalize_dtype
from .cost import Cost, grouped_matmul_cost
from .layers import experts_touched


# ---- structured pruning -----------------------------------------------------------------------
def pruned_config(model: ModelConfig | str, d_ff: int | None = None,
                  n_heads: int | None = None) -> ModelConfig:
    """The config of `model` with d_ff FFN neurons and n_heads heads per layer (d_head kept).

    Heads are removed with their keys and values, so the model must have one KV head per
    query head (n_kv_heads == n_heads) for n_heads to change; MoE models are not pruned here.
    """
    m = get_model(model)
    d_ff = m.d_ff if d_ff is None else d_ff
    n_heads = m.n_heads if n_heads is None else n_heads
    check_positive("d_ff", d_ff, integer=True)
    check_positive("n_heads", n_heads, integer=True)
    if d_ff > m.d_ff:
        raise ValueError(f"d_ff must be at most the model's {m.d_ff}, got {d_ff}")
    if n_heads > m.n_heads:
        raise ValueError(f"n_heads must be at most the model's {m.n_heads}, got {n_heads}")
    if n_heads != m.n_heads and m.n_kv_heads != m.n_heads:
        raise ValueError("n_heads can change only when n_kv_heads == n_heads (multi-head "
                         f"attention); this model has {m.n_kv_heads} KV heads")
    if m.is_moe:
        raise ValueError("model must be dense (n_experts == 1) for structured pruning")
    kv_heads = int(n_heads) if m.n_kv_heads == m.n_heads else m.n_kv_heads
    return m.with_(name=f"{m.name}-pruned", d_ff=int(d_ff), n_heads=int(n_heads),
                   n_kv_heads=kv_heads, d_head=m.d_head)


@dataclass(frozen=True)
class PrunedSize:
    """Parameters and weight bytes of a model before and after structured pruning."""

    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int

    @property
    def param_ratio(self) -> float:
        """params_after / params_before."""
        return self.params_after / self.params_before


def pruned_size(model: ModelConfig | str, d_ff: int | None = None, n_heads: int | None = None,
                dtype: str = "fp16") -> PrunedSize:
    """Parameters and bytes of `model` and of `pruned_config(model, d_ff, n_heads)`."""
    m = get_model(model)
    p = pruned_config(m, d_ff, n_heads)
    return PrunedSize(m.param_count(), p.param_count(), m.weight_bytes(dtype),
                      p.weight_bytes(dtype))


def two_four_bytes(elements: int, dtype: str = "fp16") -> float:
    """Bytes of a weight matrix of `elements` values stored in the 2:4 compressed format of
    NVIDIA's sparse tensor cores: the kept half of the values in `dtype`, plus a 2-bit index
    per kept value saying which of its group of 4 it is (NVIDIA, "Exploiting NVIDIA Ampere
    Structured Sparsity with cuSPARSELt", 2020). fp16: 9 of every 16 bits, 0.5625 of dense.
    The pattern is 2:4 for 16- and 8-bit types only: cuSPARSELt uses 1:2 for tf32 and fp32
    (https://docs.nvidia.com/cuda/cusparselt/types.html, cusparseLtSparsity_t), so 32-bit
    dtypes are refused."""
    check_positive("elements", elements, integer=True)
    if bytes_per_element(dtype) not in (1, 2):
        raise ValueError(f"dtype must be a 16- or 8-bit type (fp16, bf16, int8, fp8) for the "
                         f"2:4 pattern, got {dtype!r}")
    if elements % 4:
        raise ValueError(f"elements must be a multiple of 4 (groups of 4), got {elements}")
    kept = elements // 2
    return kept * bytes_per_element(dtype) + kept * 2 / 8


# ---- contextual sparsity ----------------------------------------------------------------------
def active_neurons(d_ff: int, sparsity: float) -> int:
    """Neurons a token computes at activation `sparsity` (the fraction that are zero):
    round(d_ff (1 - sparsity)), at least one."""
    check_positive("d_ff", d_ff, integer=True)
    check_non_negative("sparsity", sparsity)
    if sparsity >= 1:
        raise ValueError(f"sparsity must be below 1, got {sparsity}")
    return max(1, round(d_ff * (1.0 - sparsity)))


def sparse_ffn_cost(model: ModelConfig | str, sparsity: float = 0.0, tokens: int = 1,
                    dtype: str = "fp16") -> Cost:
    """FLOPs and bytes of every layer's FFN matmuls when each of `tokens` tokens computes only
    its active neurons (sparsity 0: the dense FFN matmuls of `step_costs`).

    Per layer and FFN matrix: 2 tokens d a FLOPs for a = active_neurons(d_ff, sparsity);
    bytes: inputs and the active outputs, and d weights for each of the
    experts_touched(tokens, d_ff, a) distinct neurons the tokens need. A dense model only.
    """
    m = get_model(model)
    if m.is_moe:
        raise ValueError("model must be dense (n_experts == 1)")
    check_positive("tokens", tokens, integer=True)
    dtype = normalize_dtype(dtype)
    a = active_neurons(m.d_ff, sparsity)
    read = experts_touched(tokens, m.d_ff, a) if a < m.d_ff else m.d_ff
    # grouped_matmul_cost reads `weights` (k x a) matrices: read / a of them is `read` neurons
    up = grouped_matmul_cost(tokens, m.d_model, a, weights=read / a, dtype=dtype)
    down = grouped_matmul_cost(tokens, a, m.d_model, weights=read / a, dtype=dtype)
    return (up * (m.ffn_matrices - 1) + down) * m.n_layers


def gathered_ffn_cost(model: ModelConfig | str, sparsity: float, dtype: str = "fp16") -> Cost:
    """FLOPs and bytes of one token through `llmperf.measured.sparsity.GatheredFFN` in every
    layer: the oracle's work (`sparse_ffn_cost`, tokens=1), plus the copy of the active rows of
    each "in" matrix that the gather makes before the product (written once, read again: 2 a d more
    elements per "in" matrix). The down matrix's rows are read in place."""
    m = get_model(model)
    oracle = sparse_ffn_cost(m, sparsity, 1, dtype)
    a = active_neurons(m.d_ff, sparsity)
    copies = 2 * a * m.d_model * (m.ffn_matrices - 1) * m.n_layers * bytes_per_element(dtype)
    return oracle + Cost(0.0, copies)


@dataclass(frozen=True)
class SparsitySavings:
    """The FFN matmuls dense and under an oracle that computes only the active neurons."""

    dense: Cost
    sparse: Cost

    @property
    def flops_saved(self) -> float:
        return self.dense.flops - self.sparse.flops

    @property
    def bytes_saved(self) -> float:
        return self.dense.bytes - self.sparse.bytes


def sparsity_savings(model: ModelConfig | str, sparsity: float, tokens: int = 1,
                     dtype: str = "fp16") -> SparsitySavings:
    """`sparse_ffn_cost` at sparsity 0 and at `sparsity`, side by side."""
    return SparsitySavings(sparse_ffn_cost(model, 0.0, tokens, dtype),
                           sparse_ffn_cost(model, sparsity, tokens, dtype))


# ---- early exit -------------------------------------------------------------------------------
def _check_profile(exit_fractions: Sequence[float]) -> list[float]:
    p = [float(x) for x in exit_fractions]
    if not p:
        raise ValueError("exit_fractions must list one fraction per layer, got none")
    for i, x in enumerate(p):
        check_non_negative(f"exit_fractions[{i}]", x)
    if not math.isclose(sum(p), 1.0, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"exit_fractions must sum to 1 (every token leaves), got {sum(p)}")
    return p


def expected_layers(exit_fractions: Sequence[float]) -> float:
    """Expected layers one token runs when it leaves after layer l (1-based) with probability
    exit_fractions[l - 1]: sum_l l p_l."""
    p = _check_profile(exit_fractions)
    return sum((i + 1) * x for i, x in enumerate(p))


def batch_expected_layers(exit_fractions: Sequence[float], batch: int) -> float:
    """Expected layers a batch of `batch` independent tokens runs, if it must run until its
    last token exits: E[max] = sum_{l=1}^{L} (1 - F(l - 1)^batch), F the profile's CDF."""
    p = _check_profile(exit_fractions)
    check_positive("batch", batch, integer=True)
    total, cdf = 0.0, 0.0
    for x in p:  # P(max >= l) = 1 - P(every token left before layer l)
        total += 1.0 - cdf ** batch
        cdf += x
    return total
