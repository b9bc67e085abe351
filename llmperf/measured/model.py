"""A Llama-style decoder in PyTorch, built from the `ModelConfig` the analytic layer uses.

One small class per idea: `RMSNorm`, `RotaryEmbedding`, `Attention` (grouped-query),
`FeedForward` (SwiGLU) or `MLP` (e.g. ReLU), `MoEFeedForward`, `Block`, `Transformer`.
Conventions follow Hugging Face's Llama (rotate-half RoPE, RMSNorm in fp32), so a checkpoint
loads through `llmperf.measured.hf`. Wq, Wk, Wv are one nn.Linear `wqkv`, and the SwiGLU gate and up
matrices one nn.Linear `w13` (fusing them changes no result). A config the model would not
follow (LayerNorm, learned positions, a sliding window) is refused with a ValueError naming the
field, so `Transformer.step_costs` always counts the products the model runs
(tests/test_model_costs.py compares them with PyTorch's FLOP counter).

Past keys and values live in a cache passed to `forward` (`llmperf.measured.cache.KVCache`).
A serving iteration runs as one ragged pass: several sequences' tokens end to end, each at its
own position, each attending to its own keys only (`llmperf.measured.varlen.RaggedBatch`).
Token ids and lengths are checked where a run starts, not in `forward`, which looks at no
tensor's values: a step never waits for the device, and `torch.compile` traces it whole.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..analytic.layers import StepCosts, step_costs
from ..models import ModelConfig, get_model
from ..units import check_positive
from .device import dtype_name, resolve_device, resolve_dtype
from .varlen import RaggedBatch

_SUPPORTED = {"norm": "rmsnorm", "position": "rope"}
_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def check_supported(config: ModelConfig) -> None:
    """ValueError naming the first field this Llama-style model cannot build.

    A sliding window is refused, not ignored: the model attends to every cached token, and
    `step_costs` of a windowed config counts a capped attention the model would not run."""
    for field, wanted in _SUPPORTED.items():
        if getattr(config, field) != wanted:
            raise ValueError(f"config.{field} must be {wanted!r} for llmperf.measured.model, "
                             f"got {getattr(config, field)!r}")
    if config.sliding_window is not None:
        raise ValueError(f"config.sliding_window must be None for llmperf.measured.model (it "
                         f"attends to every earlier token), got {config.sliding_window}; "
                         f"use config.with_(sliding_window=None) for full attention")
    if config.learned_positions:
        raise ValueError(f"config.learned_positions must be 0 with rope (the model has no "
                         f"position table), got {config.learned_positions}")
    if config.ffn_kind == "swiglu" and config.activation != "silu":
        raise ValueError(f"config.activation must be 'silu' with a SwiGLU FFN, "
                         f"got {config.activation!r}")
    if config.is_moe and config.bias:
        raise ValueError("config.bias must be False for an MoE model (n_experts > 1)")


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in fp32 and cast back."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos and sin tables of RoPE for positions 0..max_seq_len-1 (rotate-half layout)."""

    def __init__(self, d_head: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        self.d_head, self.max_seq_len, self.theta = d_head, max_seq_len, theta
        self.register_buffer("cos", torch.empty(max_seq_len, d_head), persistent=False)
        self.register_buffer("sin", torch.empty(max_seq_len, d_head), persistent=False)

    def reset(self) -> None:
        half = torch.arange(0, self.d_head, 2, dtype=torch.float32) / self.d_head
        angles = torch.outer(torch.arange(self.max_seq_len, dtype=torch.float32),
                             1.0 / self.theta ** half)
        angles = torch.cat([angles, angles], dim=-1)
        self.cos.copy_(angles.cos())
        self.sin.copy_(angles.sin())

    def forward(self, start_pos, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of positions start_pos..start_pos+length-1: (length, d_head) for an int
        start_pos, (B, 1, length, d_head) for per-row start positions (B,)."""
        if isinstance(start_pos, int):
            return self.cos[start_pos:start_pos + length], self.sin[start_pos:start_pos + length]
        pos = start_pos[:, None] + torch.arange(length, device=start_pos.device)  # (B, length)
        return self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) of x (B, H, T, d) by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    """Multi-head attention with n_kv_heads <= n_heads (grouped-query attention)."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        c = config
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads, self.d_head = c.n_heads, c.n_kv_heads, c.d_head
        self.wqkv = nn.Linear(c.d_model, c.q_dim + 2 * c.kv_dim, bias=c.bias)
        self.wo = nn.Linear(c.q_dim, c.d_model, bias=c.bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int | torch.Tensor, cache, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.d_head
        q, k, v = self.wqkv(x).split([H * D, Hkv * D, Hkv * D], dim=-1)
        q = apply_rotary(q.view(B, T, H, D).transpose(1, 2), cos, sin)  # (B, H, T, D)
        k = apply_rotary(k.view(B, T, Hkv, D).transpose(1, 2), cos, sin)  # (B, Hkv, T, D)
        v = v.view(B, T, Hkv, D).transpose(1, 2)
        if isinstance(cache, RaggedBatch):  # B = 1: the tokens of several sequences
            y = self._ragged(q, k, v, cache)
        else:
            if cache is not None:
                k, v = cache.update(self.layer_index, start_pos, k, v)  # (B, Hkv, start+T, D)
            if T == 1:
                y = self._decode(q, k, v, mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                   is_causal=mask is None, enable_gqa=H != Hkv)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * D))

    def _decode(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """One query per sequence: two matmuls and a softmax, each KV group's query heads folded
        into rows, (B, H, 1, D) -> (B, Hkv, H/Hkv, D), so K and V are read once per KV head (for
        one query SDPA's CPU kernel costs more). mask (B, 1, 1, L) hides keys past a row's own."""
        B, H, _, D = q.shape
        scores = q.reshape(B, self.n_kv_heads, H // self.n_kv_heads, D) @ k.transpose(-1, -2)
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        probs = (scores * (1.0 / math.sqrt(D))).float().softmax(dim=-1).to(v.dtype)
        return (probs @ v).reshape(B, H, 1, D)

    def _ragged(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                batch: RaggedBatch) -> torch.Tensor:
        """Attention of a ragged batch (q (1, H, N, D), k and v (1, Hkv, N, D)): every token's
        K and V go to its own slot, then each piece's queries attend to its own keys only,
        positions 0 .. end - 1 (see llmperf.measured.varlen for what reading them copies):
        one by one, or, where the batch asks for it, its decode pieces in one compiled kernel."""
        batch.write(self.layer_index, k[0], v[0])
        y = torch.empty_like(q)
        for i in batch.one_by_one:
            piece = batch.pieces[i]
            keys, values = batch.context(self.layer_index, i, q.dtype)  # (Hkv, end, D)
            q_piece = q[:, :, piece.rows]
            if piece.tokens == 1:
                y[:, :, piece.rows] = self._decode(q_piece, keys[None], values[None], None)
            else:
                mask = batch.masks[i]  # None: plain causal, SDPA's own mask
                y[:, :, piece.rows] = F.scaled_dot_product_attention(
                    q_piece, keys[None], values[None], attn_mask=mask, is_causal=mask is None,
                    enable_gqa=self.n_heads != self.n_kv_heads)
        if batch.fused is not None:  # the decode pieces at once, reading their keys in place
            rows, R = batch.fused.rows, len(batch.fused.rows)
            q_rows = q[0, :, rows].transpose(0, 1).reshape(R, self.n_kv_heads, -1, self.d_head)
            y_rows = batch.attend_decodes(self.layer_index, q_rows)  # (R, Hkv, G, D)
            y[0, :, rows] = y_rows.reshape(R, self.n_heads, self.d_head).transpose(0, 1)
        return y


class FeedForward(nn.Module):
    """SwiGLU: W2 (silu(x W_gate) * (x W_up)); gate and up share one matmul."""

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class MLP(nn.Module):
    """Two matrices with an activation between: W2 act(x W1). With ReLU, many of the
    hidden activations are exactly zero, which contextual sparsity exploits."""

    def __init__(self, d_model: int, d_ff: int, activation: str, bias: bool) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.act = _ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(x)))


def feed_forward(config: ModelConfig, bias: bool) -> nn.Module:
    """The dense FFN the config names: SwiGLU, or a two-matrix MLP."""
    if config.ffn_kind == "swiglu":
        return FeedForward(config.d_model, config.d_ff, bias)
    return MLP(config.d_model, config.d_ff, config.activation, bias)


class MoEFeedForward(nn.Module):
    """n_experts FFNs (SwiGLU or MLP, as the config says); a router sends each token to its top
    experts_per_token, whose outputs are mixed with a softmax over their router scores
    (Mixtral's rule).

    Routed (the default): each expert runs once, on its tokens; an expert no token chose is
    skipped. Routing is the one place shapes depend on data (torch.compile splits there).
    With `dense = True` the same function is computed with every expert on every token, the
    unchosen ones weighted 0: n_experts / experts_per_token times the FFN FLOPs, but no
    gather or index_add, whose backward is slow on a CPU (`llmperf.trained.train` uses it).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.dense = config.experts_per_token, False
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = nn.ModuleList(feed_forward(config, bias=False)
                                     for _ in range(config.n_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For tokens x (N, d_model): the chosen experts (N, k) and their mixing weights
        (N, k, x's dtype), the softmax of their router scores."""
        scores, chosen = self.router(x).float().topk(self.top_k, dim=-1)
        return chosen, scores.softmax(dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        chosen, weights = self.route(x)
        mix = self._dense if self.dense else self._routed
        return mix(x, chosen, weights).view(shape)

    def _routed(self, x: torch.Tensor, chosen: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel() > 0:
                y = expert(x[token]) * weights[token, slot].unsqueeze(-1)
                out.index_add_(0, token, y)
        return out

    def _dense(self, x: torch.Tensor, chosen: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
        mix = torch.zeros(x.shape[0], len(self.experts), dtype=weights.dtype, device=x.device)
        mix = mix.scatter(-1, chosen, weights)  # (N, n_experts), 0 for the unchosen
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out = out + expert(x) * mix[:, e:e + 1]
        return out


class Block(nn.Module):
    """Pre-norm decoder layer: x + attention(norm(x)), then h + ffn(norm(h))."""

    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config, layer_index)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = (MoEFeedForward(config) if config.is_moe
                             else feed_forward(config, config.bias))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                start_pos: int | torch.Tensor, cache, mask: torch.Tensor | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, start_pos, cache, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """A Llama-style decoder whose RoPE table covers `max_seq_len` positions.

    Weights are drawn from N(0, 0.02^2) with `seed` (norms start at 1), the same on every
    device; on "meta" it holds shapes only. An inference model: no parameter needs gradients.
    """

    # How attention runs, in llmperf.step_costs(attention=...)'s terms: prefill as one fused
    # causal SDPA kernel; decode as two matmuls and a softmax whose scores go through memory.
    attention_kernel = {"prefill": "fused", "decode": "standard"}

    def __init__(self, config: ModelConfig | str, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = torch.float32, max_seq_len: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        cfg = get_model(config)
        check_supported(cfg)
        dev = resolve_device(device, allow_meta=True)
        dt = resolve_dtype(dtype, dev)
        max_seq_len = cfg.max_seq_len if max_seq_len is None else max_seq_len
        check_positive("max_seq_len", max_seq_len, integer=True)
        self.config, self.max_seq_len = cfg, int(max_seq_len)
        with torch.device("meta"):  # shapes first; memory once, on the target device
            self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
            self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
            self.output = (None if cfg.tied_embeddings  # a tied head reuses the embedding
                           else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False))
            self.rope = RotaryEmbedding(cfg.d_head, self.max_seq_len, cfg.rope_theta)
        self.to(dtype=dt).to_empty(device=dev)
        self.requires_grad_(False)
        if dev.type != "meta":
            self._init_weights(seed)
            self.rope.reset()

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

    def step_costs(self, phase: str, batch: int = 1, seq_len: int | None = None) -> StepCosts:
        """The analytic cost table of one step of this model, in its dtype, with attention
        counted the way it runs here (`attention_kernel`); seq_len is required, as in
        `llmperf.step_costs`."""
        return step_costs(self.config, phase, batch=batch, seq_len=seq_len,
                          dtype=dtype_name(self.dtype), attention=self.attention_kernel[phase])

    def forward(self, tokens: torch.Tensor, start_pos: int | torch.Tensor = 0, cache=None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens (B, T) at positions start_pos..start_pos+T-1.

        With a cache (`llmperf.measured.cache.KVCache`), K and V are written at those positions
        and attention reads 0..start_pos+T-1; without one, tokens are a whole sequence. start_pos
        may be a LongTensor (B,) of per-row starts, with a cache reading `cache.length` positions
        (a `SlotView`). last_only returns the last position's logits (B, 1, vocab).

        With a `llmperf.measured.varlen.RaggedBatch` as cache, tokens (1, N) are the pieces of
        several sequences end to end and start_pos must be the batch's `positions` (N,); the
        logits are per token, (N, vocab), or with last_only each piece's last token's, (S, vocab).
        """
        if isinstance(cache, RaggedBatch):
            return self._forward_ragged(tokens, start_pos, cache, last_only)
        per_row = not isinstance(start_pos, int)
        if cache is None and (per_row or start_pos != 0):  # an int test: no device wait
            raise ValueError(f"start_pos must be 0 without a cache (nothing earlier to attend "
                             f"to), got {start_pos}; pass a llmperf.measured.cache.KVCache")
        T = tokens.shape[1]
        cos, sin = self.rope(start_pos, T)
        mask = None  # causal over the new tokens alone: SDPA builds it
        if per_row:  # token t of row b sees keys 0..start_pos[b]+t: a mask (B, 1, T, length)
            pos = start_pos[:, None] + torch.arange(T, device=tokens.device)
            mask = (torch.arange(cache.length, device=tokens.device) <= pos[..., None])[:, None]
        elif start_pos > 0 and T > 1:  # a chunk after cached tokens: query i sees 0..start_pos+i
            visible = torch.ones(T, start_pos + T, dtype=torch.bool, device=tokens.device)
            mask = visible.tril(diagonal=start_pos)
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, start_pos, cache, mask)
        if last_only:
            x = x[:, -1:]
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return F.linear(x, self.tok_embeddings.weight) if self.output is None else self.output(x)

    def _forward_ragged(self, tokens: torch.Tensor, positions: torch.Tensor, batch: RaggedBatch,
                        last_only: bool) -> torch.Tensor:
        """One pass over a ragged batch: RoPE at each token's own position; attention as
        `Attention._ragged` runs it; every other layer is per token and needs no change."""
        if positions is not batch.positions:
            raise ValueError("start_pos must be the RaggedBatch's positions (batch.positions)")
        if tokens.dim() != 2 or tokens.shape[0] != 1 or tokens.shape[1] != batch.num_tokens:
            raise ValueError(f"tokens must be (1, {batch.num_tokens}), the pieces' tokens end "
                             f"to end, got {tuple(tokens.shape)}")
        if max(batch.keys_attended) > self.max_seq_len:
            raise ValueError(f"pieces must end by the model's max_seq_len={self.max_seq_len}, "
                             f"got a piece ending at {max(batch.keys_attended)}")
        cos, sin = self.rope.cos[positions], self.rope.sin[positions]  # (N, D)
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, positions, batch, None)
        x = x[0, batch.last_rows] if last_only else x[0]
        return self._logits(x)


def check_model(model: Transformer) -> None:
    if not isinstance(model, Transformer):
        raise ValueError("model must be a llmperf.measured.model.Transformer, got "
                         f"{type(model).__name__}")
