"""Attention two ways, the memory-bound chains of a block, and a tensor-memory meter (torch).

`standard_attention` is the lecture's algorithm: the scores S and probabilities P are
whole (N x N) tensors. `flash_attention` is FlashAttention's tiling with the online
softmax, written in plain PyTorch as the algorithm reads (one block of queries at a time,
keys and values streamed past in blocks, a running max and sum per row, the partial
output rescaled whenever the max grows). It computes the same result without ever
holding more than one block of scores; plain PyTorch cannot keep the blocks on chip,
so it shows the algorithm and its memory footprint, not the fused kernel's speed.
Dao et al., "FlashAttention", https://arxiv.org/abs/2205.14135 (Algorithm 1), in the loop
order of FlashAttention-2 (queries outside, keys inside), https://arxiv.org/abs/2307.08691.

`CHAINS` are the memory-bound operator chains of `llmperf.measured.model`'s block, written
exactly as the model writes them (each calls the model's own code): run eagerly each
operator is its own kernel; `torch.compile` fuses each chain into one.

`peak_tensor_bytes` measures the most bytes a function's tensors hold at once: on a
CUDA device from the allocator's own counter, elsewhere by following every tensor
an operator returns until it is freed.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..models import ModelConfig, get_model
from ..units import check_positive
from .model import RMSNorm, apply_rotary


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ValueError(f"q, k, v must have the same number (>= 2) of dimensions, got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q and k need the same head size and k and v the same length, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if causal and k.shape[-2] < q.shape[-2]:
        raise ValueError(f"causal attention needs at least as many keys ({k.shape[-2]}) as "
                         f"queries ({q.shape[-2]})")


def causal_mask(n_queries: int, n_keys: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """(n_queries, n_keys) booleans, True where query i may see key j: j <= i + n_keys - n_queries.

    The queries are the last n_queries positions of the n_keys (as in a decode step or a
    chunk after cached tokens); with n_queries == n_keys this is the lower triangle.
    """
    check_positive("n_queries", n_queries, integer=True)
    check_positive("n_keys", n_keys, integer=True)
    i = torch.arange(n_queries, device=device)[:, None]
    j = torch.arange(n_keys, device=device)[None, :]
    return j <= i + (n_keys - n_queries)


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       causal: bool = False) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) masked) V with S and P materialized, (..., N, N) each.

    q (..., Nq, d), k and v (..., Nk, d): any leading dimensions (batch, heads).
    """
    _check_qkv(q, k, v, causal)
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # S: every score
    if causal:
        s = s.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), -math.inf)
    p = torch.softmax(s.float(), dim=-1).to(v.dtype)  # P: every probability
    return p @ v


@dataclass
class SoftmaxState:
    """What a block of query rows carries between key blocks: the running max m of its
    scores, the running sum l of exp(score - m), and the unnormalized output
    acc = sum_j exp(s_j - m) v_j."""

    row_max: torch.Tensor  # m (..., rows)
    row_sum: torch.Tensor  # l (..., rows)
    acc: torch.Tensor      # (..., rows, d)

    @classmethod
    def empty(cls, rows_shape: tuple[int, ...], d: int, device: torch.device) -> SoftmaxState:
        kw = dict(dtype=torch.float32, device=device)
        return cls(torch.full(rows_shape, -math.inf, **kw), torch.zeros(rows_shape, **kw),
                   torch.zeros((*rows_shape, d), **kw))

    def output(self) -> torch.Tensor:
        """softmax(all scores seen) @ values: acc / l."""
        return self.acc / self.row_sum[..., None]


def online_softmax_update(state: SoftmaxState, scores: torch.Tensor,
                          values: torch.Tensor) -> SoftmaxState:
    """Fold one block of scores (..., rows, Bc) and its values (..., Bc, d) into the state.

    m' = max(m, rowmax(s)); l' = e^(m - m') l + sum_j e^(s_j - m'); acc' = e^(m - m') acc
    + e^(s - m') V. A score of -inf (masked) contributes nothing; a row whose scores so far
    are all -inf keeps m = -inf, l = 0, acc = 0 (its exponentials are taken against 0, not
    -inf, so no inf - inf appears).
    """
    scores = scores.float()
    m_new = torch.maximum(state.row_max, scores.amax(dim=-1))
    m_ref = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # all masked so far
    rescale = torch.exp(state.row_max - m_ref)  # shrinks what was summed against the old max
    p = torch.exp(scores - m_ref[..., None])
    l_new = rescale * state.row_sum + p.sum(dim=-1)
    acc_new = rescale[..., None] * state.acc + p @ values.float()
    return SoftmaxState(m_new, l_new, acc_new)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    block_size: int = 64) -> torch.Tensor:
    """Tiled attention with the online softmax; equals `standard_attention` up to rounding.

    For each block of `block_size` queries: stream the keys and values in blocks of
    `block_size`, score the block, fold it into the running max, sum and output
    (`online_softmax_update`), and normalize once at the end. Causal: key blocks wholly
    after a query block's last visible key are skipped (never scored); the block that
    straddles the diagonal is masked. Arithmetic in fp32, output in q's dtype.
    """
    _check_qkv(q, k, v, causal)
    check_positive("block_size", block_size, integer=True)
    n_q, n_k, d = q.shape[-2], k.shape[-2], q.shape[-1]
    offset = n_k - n_q  # query i is key position i + offset
    scale = 1.0 / math.sqrt(d)
    out = torch.empty(v.shape[:-2] + (n_q, v.shape[-1]), dtype=q.dtype, device=q.device)
    for i0 in range(0, n_q, block_size):
        i1 = min(i0 + block_size, n_q)
        q_block = q[..., i0:i1, :].float() * scale
        state = SoftmaxState.empty(q_block.shape[:-1], v.shape[-1], q.device)
        keys_end = min(n_k, i1 + offset) if causal else n_k  # the last query sees up to here
        for j0 in range(0, keys_end, block_size):
            j1 = min(j0 + block_size, n_k)
            scores = q_block @ k[..., j0:j1, :].float().transpose(-2, -1)
            if causal and j1 - 1 > i0 + offset:  # the block reaches past some row's diagonal
                rows = torch.arange(i0, i1, device=q.device)[:, None] + offset
                visible = torch.arange(j0, j1, device=q.device)[None, :] <= rows  # this block only
                scores = scores.masked_fill(~visible, -math.inf)
            state = online_softmax_update(state, scores, v[..., j0:j1, :])
        out[..., i0:i1, :] = state.output().to(q.dtype)
    return out


# ---- the memory-bound chains of a block, as llmperf.measured.model writes them -------------
def residual_norm(x: torch.Tensor, branch: torch.Tensor, norm: RMSNorm
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """h = x + branch, then norm(h): Block.forward's residual add and the next RMSNorm.
    h is returned too: the block's next residual add reads it again."""
    h = x + branch
    return h, norm(h)


def swiglu_gate(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up on the w13 projection's output, as FeedForward computes it."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on queries or keys (B, H, T, d): the model's own `apply_rotary`."""
    return apply_rotary(x, cos, sin)


def masked_softmax(scores: torch.Tensor, visible: torch.Tensor, scale: float) -> torch.Tensor:
    """Mask, scale and softmax of attention scores (..., T, L), as Attention._decode does;
    scale is 1/sqrt(d_head)."""
    scores = scores.masked_fill(~visible, -math.inf)
    return (scores * scale).float().softmax(dim=-1).to(scores.dtype)


@dataclass(frozen=True)
class ChainInputs:
    """A chain's function and the tensors it runs on."""

    name: str
    fn: Callable[..., object]
    args: tuple


def chain_inputs(config: ModelConfig | str, tokens: int, kv_len: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 seed: int = 0) -> dict[str, ChainInputs]:
    """Inputs of each chain for one layer of `config` over `tokens` positions of one sequence.

    residual_norm: (tokens, d_model); swiglu_gate: (tokens, 2 d_ff); rotary: queries
    (1, heads, tokens, d_head); masked_softmax: scores (1, heads, tokens, kv_len), kv_len
    defaulting to tokens, with the causal mask. The names match `llmperf.analytic.fusion.CHAINS`.
    """
    c = get_model(config)
    check_positive("tokens", tokens, integer=True)
    kv_len = tokens if kv_len is None else kv_len
    check_positive("kv_len", kv_len, integer=True)
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    norm = RMSNorm(c.d_model, c.norm_eps).to(device=device, dtype=dtype).requires_grad_(False)
    angles = randn(tokens, c.d_head)
    visible = causal_mask(tokens, kv_len, device)
    return {
        "residual_norm": ChainInputs("residual_norm", residual_norm,
                                     (randn(tokens, c.d_model), randn(tokens, c.d_model), norm)),
        "swiglu_gate": ChainInputs("swiglu_gate", swiglu_gate, (randn(tokens, 2 * c.d_ff),)),
        "rotary": ChainInputs("rotary", rotary, (randn(1, c.n_heads, tokens, c.d_head),
                                                 angles.cos(), angles.sin())),
        "masked_softmax": ChainInputs("masked_softmax", masked_softmax,
                                      (randn(1, c.n_heads, tokens, kv_len), visible,
                                       1.0 / math.sqrt(c.d_head))),
    }


# ---- how many bytes tensors hold at once --------------------------------------------------
class _LiveTensors(TorchDispatchMode):
    """Counts the storage bytes of every tensor an operator returns while it is alive."""

    def __init__(self, exclude: set[int]) -> None:
        super().__init__()
        self.exclude = exclude  # storages that existed before (the inputs)
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = self.peak = 0

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.live -= self.sizes.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in self.exclude or storage.nbytes() == 0:
                continue
            if ptr not in self.refs:
                self.refs[ptr], self.sizes[ptr] = 0, storage.nbytes()
                self.live += storage.nbytes()
            self.refs[ptr] += 1
            weakref.finalize(t, self._release, ptr)
        self.peak = max(self.peak, self.live)
        return out


def peak_tensor_bytes(fn: Callable[..., object], *args: torch.Tensor) -> int:
    """Most bytes held at once by the tensors fn(*args) creates (its inputs not counted).

    CUDA: torch.cuda.max_memory_allocated around the call, less what was allocated before
    (the caching allocator's own count, scratch buffers of kernels included). Elsewhere:
    every tensor an operator returns is followed until it is freed, and the peak of their
    storage bytes is kept; scratch memory a kernel allocates and frees inside itself is not
    seen, so a fused kernel's few small per-thread buffers are left out.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if tensors and tensors[0].device.type == "cuda":
        device = tensors[0].device
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn(*args)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    exclude = {t.untyped_storage().data_ptr() for t in tensors}
    with _LiveTensors(exclude) as meter:
        out = fn(*args)
    del out
    return int(meter.peak)
