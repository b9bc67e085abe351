"""A Llama-style decoder in PyTorch, built from the `ModelConfig` the analytic layer uses.

One small class per idea: `RMSNorm`, `RotaryEmbedding`, `KVCache`, `Attention`
(grouped-query), `FeedForward` (SwiGLU), `MoEFeedForward` (router + top-k experts),
`Block`, and the `Transformer` around them. `generate` runs prefill then decode,
with greedy, temperature or top-k sampling, and records when each token appeared.

Conventions follow Hugging Face's Llama (rotate-half RoPE, RMSNorm in fp32, the
same weight shapes), so a checkpoint's tensors load with `load_hf_state_dict`.
Two projections are fused for speed, which changes no result: Wq, Wk, Wv are one
matrix `wqkv`, and the SwiGLU gate and up matrices are one matrix `w13`. Weights
are stored (in, out), the transpose of nn.Linear's layout: see `Linear`.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .models import ModelConfig, get_model
from .units import check_positive

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_SUPPORTED = {"norm": "rmsnorm", "position": "rope", "ffn_kind": "swiglu", "activation": "silu"}


# ---- validation -------------------------------------------------------------------------------
def resolve_device(device: str | torch.device, allow_meta: bool = False) -> torch.device:
    """A torch.device for "cpu", "cuda[:i]" or "mps" (and "meta" when allowed: shapes
    without storage); ValueError if absent on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here; use 'cpu'")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; use 'cpu'")
    if dev.type == "meta" and allow_meta:
        return dev
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
# How this model runs attention, in the terms of llmperf.layer_costs(attention=...):
# prefill through one fused, causal scaled_dot_product_attention kernel; decode as two
# matmuls and a softmax whose (small) score rows go through memory.
ATTENTION_KERNEL = {"prefill": "fused", "decode": "standard"}


class _CpuGemv:
    """Whether single-row fp32 matmuls on the CPU go to NumPy's BLAS right now.

    Batch-1 decode on a CPU is a chain of matrix-vector products bound by reading the
    weights. On some CPUs the matrix-vector kernel PyTorch calls streams weights well
    below the memory's bandwidth while NumPy's OpenBLAS kernel reaches it
    (benchmarks/decode_bandwidth.py measures both). The two libraries' thread pools
    compete for cores, so PyTorch is held to one thread while this is on. OpenBLAS's
    workers also keep spinning for up to about 0.1 s after each call, which slows
    whatever PyTorch runs next (a prefill right after decoding, for one) unless
    OPENBLAS_THREAD_TIMEOUT=4 was set before NumPy was first imported. Hence it is on
    by default only where that variable is set (the Makefile sets it for the book, the
    tests and the benchmarks); see `Transformer(cpu_gemv=...)`.
    """

    active = False


@contextlib.contextmanager
def _numpy_gemv() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _CpuGemv.active = True
    try:
        yield
    finally:
        _CpuGemv.active = False
        torch.set_num_threads(threads)


class Linear(nn.Module):
    """y = x W (+ b) with W stored (in_features, out_features).

    nn.Linear stores W as (out, in) and computes x W^T. For one token on a CPU the
    matmul is a matrix-vector product bound by reading W; with MKL, x W over an
    (in, out) matrix streams it measurably faster than x W^T (see benchmarks/).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _CpuGemv.active:  # one fp32 row on the CPU, no autograd: zero-copy NumPy views
            y = torch.from_numpy(np.matmul(x.numpy(), self.weight.numpy()))
        else:
            y = x @ self.weight
        return y if self.bias is None else y + self.bias


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
        self.wqkv = Linear(c.d_model, c.q_dim + 2 * c.kv_dim, bias=c.bias)
        self.wo = Linear(c.q_dim, c.d_model, bias=c.bias)
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
        if T == 1:
            # Decode: fold each group's query heads into rows, so K and V are read once per
            # KV head and never copied: (B, H, 1, D) -> (B, Hkv, H/Hkv, D). Two plain matmuls
            # and a softmax: for a single query, SDPA's CPU kernel costs more than the work.
            scores = q.reshape(B, Hkv, H // Hkv, D) @ k.transpose(-1, -2) * (1.0 / math.sqrt(D))
            if step.mask is not None:
                scores = scores.masked_fill(~step.mask, -math.inf)
            y = (scores.float().softmax(dim=-1).to(v.dtype) @ v).reshape(B, H, 1, D)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=step.mask, is_causal=step.causal,
                                               enable_gqa=H != Hkv)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))


class FeedForward(nn.Module):
    """SwiGLU: W2 (silu(x W_gate) * (x W_up)); gate and up share one matmul."""

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.w13 = Linear(d_model, 2 * d_ff, bias=bias)
        self.w2 = Linear(d_ff, d_model, bias=bias)

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
        self.router = Linear(d, E)
        self.w13 = nn.Parameter(torch.empty(E, d, 2 * f))  # (in, out) per expert, as in Linear
        self.w2 = nn.Parameter(torch.empty(E, f, d))

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
            gate, up = (x[token] @ self.w13[e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ self.w2[e]
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


# ---- the model ------------------------------------------------------------------------------------
class Transformer(nn.Module):
    """A Llama-style decoder with a KV cache for `max_batch` sequences of `max_seq_len` tokens.

    Weights are drawn from N(0, 0.02^2) with `seed` (norms start at 1), the same on
    every device. Parameters do not require gradients: this is an inference model
    (call `requires_grad_(True)` to train it).
    """

    def __init__(self, config: ModelConfig | str, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, max_batch: int = 1,
                 max_seq_len: int | None = None, seed: int = 0, cpu_gemv: bool | None = None) -> None:
        super().__init__()
        cfg = get_model(config)
        check_supported(cfg)
        dev = resolve_device(device, allow_meta=True)
        dt = resolve_dtype(dtype, dev)
        check_positive("max_batch", max_batch, integer=True)
        max_seq_len = cfg.max_seq_len if max_seq_len is None else max_seq_len
        check_positive("max_seq_len", max_seq_len, integer=True)
        self.config, self.max_batch, self.max_seq_len = cfg, int(max_batch), int(max_seq_len)
        # Batch-1 fp32 decode on the CPU through NumPy's matrix-vector kernel (_CpuGemv); by
        # default only where OpenBLAS's workers are told not to spin after each call.
        self.cpu_gemv = ("OPENBLAS_THREAD_TIMEOUT" in os.environ) if cpu_gemv is None else bool(cpu_gemv)
        with torch.device("meta"):  # shapes first; memory once, on the target device
            self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            # A tied head reuses the embedding (vocab, d); an untied one is a Linear (d, vocab).
            self.output = None if cfg.tied_embeddings else Linear(cfg.d_model, cfg.vocab_size)
            self.rope = RotaryEmbedding(cfg.d_head, self.max_seq_len, cfg.rope_theta)
            for layer in self.layers:
                layer.attention.kv_cache = KVCache(self.max_batch, self.max_seq_len, cfg.n_kv_heads, cfg.d_head)
        self.to(dtype=dt).to_empty(device=dev)
        self.requires_grad_(False)
        if dev.type == "meta":  # shapes only, e.g. to count a full-size model's parameters
            return
        self._init_weights(seed)
        self.rope.reset()
        self.reset_cache()

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counts once); equals config.param_count()."""
        return sum(p.numel() for p in self.parameters())

    def kv_cache_bytes(self) -> int:
        """Bytes the preallocated K and V buffers of every layer occupy."""
        return sum(buf.numel() * buf.element_size()
                   for layer in self.layers
                   for buf in (layer.attention.kv_cache.k, layer.attention.kv_cache.v))

    def reset_cache(self) -> None:
        """Zero every layer's keys and values."""
        for layer in self.layers:
            layer.attention.kv_cache.k.zero_()
            layer.attention.kv_cache.v.zero_()

    def _step(self, tokens: torch.Tensor, start_pos: int | torch.Tensor, use_cache: bool) -> _Step:
        B, T = tokens.shape
        arange = torch.arange(T, device=tokens.device)
        if isinstance(start_pos, torch.Tensor):
            if start_pos.shape != (B,) or start_pos.dtype not in (torch.int32, torch.int64):
                raise ValueError(f"start_pos must be an int or an integer tensor of shape ({B},), "
                                 f"got {start_pos.dtype} {tuple(start_pos.shape)}")
            start_pos = start_pos.to(tokens.device, torch.int64)
            lo, hi = int(start_pos.min()), int(start_pos.max())
            if lo == hi:
                start_pos = lo
        else:
            if isinstance(start_pos, bool) or not isinstance(start_pos, int):
                raise ValueError(f"start_pos must be an int or a LongTensor, got {start_pos!r}")
            lo = hi = start_pos
        if lo < 0:
            raise ValueError(f"start_pos must be >= 0, got {lo}")
        end = hi + T
        if not use_cache and hi != 0:
            raise ValueError(f"start_pos must be 0 when use_cache=False, got {hi}")
        if end > self.max_seq_len:
            raise ValueError(f"context of {end} tokens (start_pos + tokens) is beyond the cache and "
                             f"rope table of max_seq_len={self.max_seq_len}")
        if use_cache and B > self.max_batch:
            raise ValueError(f"batch of {B} sequences is beyond the cache's max_batch={self.max_batch}")
        if isinstance(start_pos, int):
            positions = (start_pos + arange).unsqueeze(0).expand(B, T)
            start = start_pos
        else:
            positions, start = start_pos.unsqueeze(1) + arange, None
        mask, causal = None, False
        if T > 1 and start == 0:
            causal = True  # keys are exactly the T new tokens
        elif start is None or T > 1:
            keys = torch.arange(end, device=tokens.device)
            mask = (keys <= positions.unsqueeze(-1)).unsqueeze(1)  # (B, 1, T, end)
        return _Step(positions, start, end, mask, causal, use_cache)

    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0, use_cache: bool = True,
                last_only: bool = False, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens (B, T) at positions start_pos, start_pos+1, ...

        start_pos is one int for the whole batch or a (B,) tensor, one per sequence.
        With use_cache, keys and values are written to the cache and attention reads
        every cached position before each token's own; without, the tokens are the
        whole sequence (start_pos 0). last_only returns (B, 1, vocab) for each row's
        last token: position T-1, or lengths-1 for right-padded rows of `lengths` tokens.
        """
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.dtype != torch.int64:
            raise ValueError("tokens must be a LongTensor of shape (batch, seq_len), got "
                             f"{getattr(tokens, 'dtype', type(tokens))} {tuple(getattr(tokens, 'shape', ()))}")
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must hold at least one token per row, got shape {tuple(tokens.shape)}")
        lo, hi = torch.aminmax(tokens)
        if lo < 0 or hi >= self.config.vocab_size:
            raise ValueError(f"tokens must be ids in [0, {self.config.vocab_size}), got [{int(lo)}, {int(hi)}]")
        tokens = tokens.to(self.device)
        if (self.cpu_gemv and tokens.numel() == 1 and self.device.type == "cpu"
                and self.dtype == torch.float32 and not torch.is_grad_enabled()):
            with _numpy_gemv():
                return self._forward(tokens, start_pos, use_cache, last_only, lengths)
        return self._forward(tokens, start_pos, use_cache, last_only, lengths)

    def _forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor, use_cache: bool,
                 last_only: bool, lengths: torch.Tensor | None) -> torch.Tensor:
        step = self._step(tokens, start_pos, use_cache)
        cos, sin = self.rope(step.positions)
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, step)
        if last_only:
            if lengths is None:
                x = x[:, -1:]
            else:
                lengths = torch.as_tensor(lengths, device=x.device)
                if lengths.shape != (x.shape[0],) or lengths.min() < 1 or lengths.max() > x.shape[1]:
                    raise ValueError(f"lengths must hold {x.shape[0]} values in [1, {x.shape[1]}]")
                x = x[torch.arange(x.shape[0], device=x.device), lengths - 1].unsqueeze(1)
        x = self.norm(x)
        return F.linear(x, self.tok_embeddings.weight) if self.output is None else self.output(x)

    # ---- Hugging Face weights ------------------------------------------------------------------
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the names and (out, in) shapes of transformers' LlamaForCausalLM."""
        if self.config.is_moe:
            raise ValueError("hf_state_dict: MoE models have no LlamaForCausalLM layout")
        c = self.config
        out = {"model.embed_tokens.weight": self.tok_embeddings.weight, "model.norm.weight": self.norm.weight}
        if self.output is not None:
            out["lm_head.weight"] = self.output.weight.t()
        for i, layer in enumerate(self.layers):
            p, a, f = f"model.layers.{i}.", layer.attention, layer.feed_forward
            proj = dict(zip(("q_proj", "k_proj", "v_proj"), a.wqkv.weight.split([c.q_dim, c.kv_dim, c.kv_dim], 1)))
            proj["o_proj"] = a.wo.weight
            for name, w in proj.items():
                out[f"{p}self_attn.{name}.weight"] = w.t()
            gate, up = f.w13.weight.chunk(2, dim=1)
            for name, w in (("gate_proj", gate), ("up_proj", up), ("down_proj", f.w2.weight)):
                out[f"{p}mlp.{name}.weight"] = w.t()
            out[f"{p}input_layernorm.weight"] = layer.attention_norm.weight
            out[f"{p}post_attention_layernorm.weight"] = layer.ffn_norm.weight
            if c.bias:
                biases = dict(zip(("q_proj", "k_proj", "v_proj"), a.wqkv.bias.split([c.q_dim, c.kv_dim, c.kv_dim])))
                biases["o_proj"] = a.wo.bias
                for name, b in biases.items():
                    out[f"{p}self_attn.{name}.bias"] = b
                out[f"{p}mlp.gate_proj.bias"], out[f"{p}mlp.up_proj.bias"] = f.w13.bias.chunk(2)
                out[f"{p}mlp.down_proj.bias"] = f.w2.bias
        return {k: v.detach().contiguous().clone() for k, v in out.items()}

    @torch.no_grad()
    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy in weights named and shaped as in LlamaForCausalLM (the inverse of `hf_state_dict`)."""
        ours = self.hf_state_dict()
        missing = sorted(set(ours) - set(state))
        if missing:
            raise ValueError(f"state is missing {len(missing)} tensors, e.g. {missing[:3]}")
        for name, t in ours.items():
            if tuple(state[name].shape) != tuple(t.shape):
                raise ValueError(f"state[{name!r}] has shape {tuple(state[name].shape)}, expected {tuple(t.shape)}")
        c = self.config
        for i, layer in enumerate(self.layers):
            p, a, f = f"model.layers.{i}.", layer.attention, layer.feed_forward
            w = lambda name: state[f"{p}{name}.weight"]  # noqa: E731
            a.wqkv.weight.copy_(torch.cat([w(f"self_attn.{n}_proj") for n in "qkv"]).t())
            a.wo.weight.copy_(w("self_attn.o_proj").t())
            f.w13.weight.copy_(torch.cat([w("mlp.gate_proj"), w("mlp.up_proj")]).t())
            f.w2.weight.copy_(w("mlp.down_proj").t())
            layer.attention_norm.weight.copy_(w("input_layernorm"))
            layer.ffn_norm.weight.copy_(w("post_attention_layernorm"))
            if c.bias:
                a.wqkv.bias.copy_(torch.cat([state[f"{p}self_attn.{n}_proj.bias"] for n in "qkv"]))
                a.wo.bias.copy_(state[f"{p}self_attn.o_proj.bias"])
                f.w13.bias.copy_(torch.cat([state[f"{p}mlp.gate_proj.bias"], state[f"{p}mlp.up_proj.bias"]]))
                f.w2.bias.copy_(state[f"{p}mlp.down_proj.bias"])
        self.tok_embeddings.weight.copy_(state["model.embed_tokens.weight"])
        self.norm.weight.copy_(state["model.norm.weight"])
        if self.output is not None:
            self.output.weight.copy_(state["lm_head.weight"].t())


# ---- generation -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Generation:
    """New tokens (B, max_new_tokens) and when each step's tokens were ready.

    timestamps_s[i] is the time from the start of `generate` until the i-th new
    tokens were on the host: timestamps_s[0] is the time to first token (TTFT).
    """

    tokens: torch.Tensor
    timestamps_s: list[float]
    prompt_lens: tuple[int, ...]

    @property
    def prompt_len(self) -> int:
        """The longest prompt of the batch (all of them, when they have one length)."""
        return max(self.prompt_lens)

    @property
    def ttft_s(self) -> float:
        return self.timestamps_s[0]

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (0 with a single token)."""
        n = len(self.timestamps_s) - 1
        return (self.timestamps_s[-1] - self.timestamps_s[0]) / n if n else 0.0


def synchronize(device: torch.device | str | None) -> None:
    """Wait until queued GPU work on `device` is done (a no-op on the CPU)."""
    if device is None:
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _prompt_rows(prompt: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompt, torch.Tensor):
        if prompt.dim() == 1:
            prompt = prompt.unsqueeze(0)
        if prompt.dim() != 2 or prompt.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"prompt must be a (batch, T) integer tensor, got {prompt.dtype} {tuple(prompt.shape)}")
        return prompt.tolist()
    rows = list(prompt)
    if rows and all(isinstance(t, int) for t in rows):
        rows = [rows]
    rows = [list(r) for r in rows]
    if not rows or not all(rows) or not all(isinstance(t, int) for r in rows for t in r):
        raise ValueError("prompt must be a LongTensor (B, T), a list of token ids, or a list of "
                         "non-empty lists of token ids")
    return rows


def next_token_distribution(logits: torch.Tensor, temperature: float = 1.0,
                            top_k: int | None = None) -> torch.Tensor:
    """Probabilities (B, V) that sampling draws from: softmax(logits / temperature),
    with every token outside the top_k most likely set to probability 0."""
    check_positive("temperature", temperature)
    logits = logits.float() / temperature
    if top_k is not None:
        check_positive("top_k", top_k, integer=True)
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits.softmax(dim=-1)


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None,
                generator: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from the last logits (B, V): argmax at temperature 0, else
    a draw from `next_token_distribution` with `generator` (so a seed fixes the draw)."""
    if temperature == 0.0:
        return logits.float().argmax(dim=-1)
    probs = next_token_distribution(logits, temperature, top_k)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(model: Transformer, prompt: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
             max_new_tokens: int, temperature: float = 0.0, top_k: int | None = None,
             seed: int = 0, use_cache: bool = True) -> Generation:
    """Extend each prompt by max_new_tokens tokens.

    temperature 0 is greedy (argmax); above 0 samples from softmax(logits / temperature),
    restricted to the top_k most likely tokens when top_k is given, with a generator
    seeded by `seed`. Prompts may differ in length (a list of lists): they are
    right-padded and each sequence continues from its own length. Without the cache
    every step runs the whole sequence again, which is slower and gives the same tokens.
    """
    if not isinstance(model, Transformer):
        raise ValueError(f"model must be a llmperf.transformer.Transformer, got {type(model).__name__}")
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        check_positive("top_k", top_k, integer=True)
        if top_k > model.config.vocab_size:
            raise ValueError(f"top_k must be <= vocab_size ({model.config.vocab_size}), got {top_k}")
    rows = _prompt_rows(prompt)
    lens = [len(r) for r in rows]
    B, total = len(rows), max(lens) + max_new_tokens - 1
    if use_cache and B > model.max_batch:
        raise ValueError(f"prompt has {B} sequences, beyond the model's max_batch={model.max_batch}")
    if total > model.max_seq_len:
        raise ValueError(f"prompt ({max(lens)} tokens) + max_new_tokens - 1 = {total} is beyond "
                         f"max_seq_len={model.max_seq_len}")
    dev = model.device
    seq = torch.zeros(B, total + 1, dtype=torch.int64)  # right-padded with token 0
    for b, r in enumerate(rows):
        seq[b, :len(r)] = torch.tensor(r)
    seq = seq.to(dev)
    pos = torch.tensor(lens, device=dev)
    uniform = len(set(lens)) == 1
    gen = torch.Generator(device=dev).manual_seed(seed)
    out, stamps = [], []
    batch = torch.arange(B, device=dev)
    start = time.perf_counter()
    logits = model(seq[:, :max(lens)], 0, use_cache, last_only=True, lengths=None if uniform else pos)
    for i in range(max_new_tokens):
        nxt = sample_next(logits[:, -1], temperature, top_k, gen)
        out.append(nxt)
        synchronize(dev)
        stamps.append(time.perf_counter() - start)
        if i == max_new_tokens - 1:
            break
        seq[batch, pos] = nxt
        if use_cache:
            logits = model(nxt.unsqueeze(1), int(lens[0]) + i if uniform else pos, True)
        else:
            width = max(lens) + i + 1
            logits = model(seq[:, :width], 0, False, last_only=True, lengths=None if uniform else pos + 1)
        pos = pos + 1
    return Generation(torch.stack(out, dim=1).cpu(), stamps, tuple(lens))
