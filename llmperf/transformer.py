"""A Llama-style decoder in PyTorch, built from the `ModelConfig` the analytic layer uses.

One small class per idea: `RMSNorm`, `RotaryEmbedding`, `KVCache`, `Attention`
(grouped-query), `FeedForward` (SwiGLU), `MoEFeedForward` (router + top-k experts),
`Block`, and the `Transformer` around them. `generate` runs prefill then decode,
with greedy, temperature or top-k sampling, and records when each token appeared.

Conventions follow Hugging Face's Llama (rotate-half RoPE, RMSNorm in fp32, the
same weight shapes), so a checkpoint's tensors load with `load_hf_state_dict`.
Two projections are fused for speed, which changes no result: Wq, Wk, Wv are one
matrix `wqkv`, and the SwiGLU gate and up matrices are one matrix `w13`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig, get_model
from .units import check_positive

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_SUPPORTED = {"norm": "rmsnorm", "position": "rope", "ffn_kind": "swiglu", "activation": "silu"}


# ---- validation -------------------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    """A torch.device for "cpu", "cuda[:i]" or "mps"; ValueError if absent on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here; use 'cpu'")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """fp32 and bf16 everywhere; fp16 on GPUs only (CPUs run it slowly or not at all)."""
    if isinstance(dtype, str):
        key = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16",
               "float16": "fp16", "half": "fp16"}.get(dtype.lower(), dtype.lower())
        dtype = DTYPES.get(key, dtype)
    allowed = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type != "cpu" else [])
    if dtype not in allowed:
        raise ValueError(f"dtype must be one of {[str(d) for d in allowed]} on {device.type}, got {dtype!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The llmperf name of a torch dtype ("fp32", "bf16", "fp16")."""
    return {v: k for k, v in DTYPES.items()}[dtype]


def check_supported(config: ModelConfig) -> None:
    """ValueError naming the first field this Llama-style model cannot build."""
    for field, wanted in _SUPPORTED.items():
        if getattr(config, field) != wanted:
            raise ValueError(f"config.{field} must be {wanted!r} for llmperf.transformer, "
                             f"got {getattr(config, field)!r}")
    if config.is_moe and config.bias:
        raise ValueError("config.bias must be False for an MoE model (n_experts > 1)")


# ---- building blocks ------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos and sin tables of RoPE for positions 0..max_seq_len-1 (rotate-half layout)."""

    def __init__(self, d_head: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        self.d_head, self.max_seq_len, self.theta = d_head, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, d_head), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, d_head), persistent=False)

    def reset(self) -> None:
        inv_freq = 1.0 / self.theta ** (torch.arange(0, self.d_head, 2, dtype=torch.float32) / self.d_head)
        angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos.copy_(angles.cos())
        self.sin.copy_(angles.sin())

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions (B, T) -> cos, sin (B, 1, T, d_head), broadcast over heads
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) of x (B, H, T, d) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class KVCache(nn.Module):
    """Keys and values of every layer's past tokens, in buffers allocated once."""

    def __init__(self, max_batch: int, max_seq_len: int, n_kv_heads: int, d_head: int) -> None:
        super().__init__()
        shape = (max_batch, n_kv_heads, max_seq_len, d_head)
        self.register_buffer("k", torch.zeros(shape), persistent=False)
        self.register_buffer("v", torch.zeros(shape), persistent=False)

    def update(self, start: int | None, positions: torch.Tensor, end: int,
               k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, T, d) at `positions` in place; return views of slots 0..end-1.

        start is the common first position when every sequence has the same one
        (a plain slice copy), None when they differ (an indexed write).
        """
        B, _, T, _ = k.shape
        if start is not None:
            self.k[:B, :, start:start + T] = k
            self.v[:B, :, start:start + T] = v
        else:
            rows = torch.arange(B, device=k.device).unsqueeze(1)
            self.k[rows, :, positions] = k.transpose(1, 2)
            self.v[rows, :, positions] = v.transpose(1, 2)
        return self.k[:B, :, :end], self.v[:B, :, :end]


@dataclass(frozen=True)
class _Step:
    """Where the tokens of one forward call sit: shared by every layer."""

    positions: torch.Tensor       # (B, T) absolute position of each token
    start: int | None             # common first position, or None when sequences differ
    end: int                      # keys 0..end-1 are read from the cache
    mask: torch.Tensor | None     # (B or 1, 1, T, end) True where a query may see a key
    causal: bool                  # let SDPA build the causal mask itself
    use_cache: bool


class Attention(nn.Module):
    """Multi-head attention with n_kv_heads <= n_heads (grouped-query attention)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.n_heads, self.n_kv_heads, self.d_head = c.n_heads, c.n_kv_heads, c.d_head
        self.wqkv = nn.Linear(c.d_model, c.q_dim + 2 * c.kv_dim, bias=c.bias)
        self.wo = nn.Linear(c.q_dim, c.d_model, bias=c.bias)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, step: _Step) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.d_head
        q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = apply_rotary(q.view(B, T, H, D).transpose(1, 2), cos, sin)
        k = apply_rotary(k.view(B, T, Hkv, D).transpose(1, 2), cos, sin)
        v = v.view(B, T, Hkv, D).transpose(1, 2)
        if step.use_cache:
            k, v = self.kv_cache.update(step.start, step.positions, step.end, k, v)
        if T == 1 and H != Hkv:
            # Decode: fold each group's query heads into rows, so K and V are read once per
            # KV head and never copied: (B, H, 1, D) -> (B, Hkv, H/Hkv, D).
            y = F.scaled_dot_product_attention(q.reshape(B, Hkv, H // Hkv, D), k, v, attn_mask=step.mask)
            y = y.reshape(B, H, 1, D)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=step.mask, is_causal=step.causal,
                                               enable_gqa=H != Hkv)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    """SwiGLU: W2 (silu(x W_gate) * (x W_up)); gate and up share one matmul."""

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class MoEFeedForward(nn.Module):
    """n_experts SwiGLU experts; a router sends each token to its top experts_per_token.

    The chosen experts' outputs are mixed with a softmax over their router scores
    (Mixtral's rule). Each expert runs once on the tokens routed to it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        E, d, f = config.n_experts, config.d_model, config.d_ff
        self.top_k = config.experts_per_token
        self.router = nn.Linear(d, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, 2 * f, d))
        self.w2 = nn.Parameter(torch.empty(E, d, f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        scores, experts = self.router(x).float().topk(self.top_k, dim=-1)  # (N, k)
        weights = scores.softmax(dim=-1).to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(self.w13.shape[0]):
            token, slot = (experts == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            gate, up = (x[token] @ self.w13[e].t()).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ self.w2[e].t()
            out.index_add_(0, token, y * weights[token, slot].unsqueeze(-1))
        return out.view(shape)


class Block(nn.Module):
    """Pre-norm decoder layer: x + attention(norm(x)), then h + ffn(norm(h))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = (MoEFeedForward(config) if config.is_moe
                             else FeedForward(config.d_model, config.d_ff, config.bias))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, step: _Step) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, step)
        return h + self.feed_forward(self.ffn_norm(h))
