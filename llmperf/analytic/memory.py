"""What a batch of sequences needs in accelerator memory, and whether it fits: `memory_report`.

Four parts, in bytes:
- weights: every parameter, `ModelConfig.weight_bytes(dtype)`;
- KV cache: keys and values of `batch` sequences of `seq_len` tokens,
  `ModelConfig.kv_cache_bytes(seq_len, batch, kv_dtype)` (a sliding window caps it);
- activations: an estimate of the largest set of tensors one layer holds at once in a
  prefill of `batch` sequences of T tokens (T = `prefill_tokens`, default `seq_len`), in
  `dtype`. With B sequences, D = d_model, h query heads, N = T keys, k experts per token
  (1 when dense) and d_ff the FFN's width, every stage keeps the residual stream and its
  normed copy, 2 B T D elements, and adds
    attention: the queries, B T (h d_head) (K and V are in the KV cache), and, under the
      standard algorithm only, the scores S and probabilities P of all heads, 2 B h T N
      (the fused kernel keeps them on chip);
    FFN: the hidden tensors, B T k d_ff each: three for a gated FFN (gate, up and their
      product, alive together when the product is formed), two otherwise (up and its
      activation);
    LM head: the logits of the last position, B V.
  The estimate is the largest of the three stages; it leaves out the router's logits,
  workspace of the kernels, and allocator fragmentation, which `reserved_bytes` can hold;
- reserved: whatever the caller sets aside (the CUDA context, the runtime).

The usable memory is `Accelerator.usable_capacity(ecc)`: on GDDR6 parts with ECC on, 15/16
of `mem_capacity` (see `llmperf.hardware`). It fits when the four parts together are at
most the usable memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..table import Table
from ..units import (
    bytes_per_element,
    check_non_negative,
    check_positive,
    format_bytes,
    normalize_dtype,
)

ATTENTION_ALGORITHMS = ("standard", "fused")  # as in llmperf.analytic.layers


def usable_bytes(accelerator: Accelerator | str, ecc: bool = True) -> float:
    """`accelerator.usable_capacity(ecc)`, with `ecc` checked: the one notion of usable
    memory that `memory_report`, `max_batch_size` and `kv_capacity_tokens` share."""
    if not isinstance(ecc, bool):
        raise ValueError(f"ecc must be True or False, got {ecc!r}")
    return get_accelerator(accelerator).usable_capacity(ecc)


def activation_bytes(model: ModelConfig | str, batch: int, tokens: int, dtype: str = "fp16",
                     attention: str = "standard") -> float:
    """Estimated bytes of the largest set of tensors one layer holds at once in a prefill of
    `batch` sequences of `tokens` tokens (see the module docstring for the three stages)."""
    m = get_model(model)
    check_positive("batch", batch, integer=True)
    check_positive("tokens", tokens, integer=True)
    if attention not in ATTENTION_ALGORITHMS:
        raise ValueError(f"attention must be one of {ATTENTION_ALGORITHMS}, got {attention!r}")
    rows = batch * tokens
    stream = 2 * rows * m.d_model
    scores = 2 * batch * m.n_heads * tokens * tokens if attention == "standard" else 0
    attention_stage = rows * m.q_dim + scores
    hidden = 3 if m.ffn_kind == "swiglu" else 2
    ffn_stage = hidden * rows * m.experts_per_token * m.d_ff
    head_stage = batch * m.vocab_size
    return (stream + max(attention_stage, ffn_stage, head_stage)) * bytes_per_element(dtype)


@dataclass(frozen=True)
class MemoryReport:
    """Bytes a batch needs beside what the accelerator offers; `fits` when they are enough.

    `usable_bytes` is `usable_capacity(ecc)`; `needed_bytes` the weights, the KV cache,
    the activations (an estimate: `llmperf.analytic.memory`) and the reserve together.
    """

    model: str
    accelerator: str
    batch: int
    seq_len: int
    prefill_tokens: int
    dtype: str
    kv_dtype: str
    attention: str
    ecc: bool
    weight_bytes: float
    kv_bytes: float
    activation_bytes: float
    reserved_bytes: float
    usable_bytes: float

    @property
    def needed_bytes(self) -> float:
        """Weights + KV cache + activations + reserve."""
        return self.weight_bytes + self.kv_bytes + self.activation_bytes + self.reserved_bytes

    @property
    def free_bytes(self) -> float:
        """Usable bytes left once everything is placed; negative when it does not fit."""
        return self.usable_bytes - self.needed_bytes

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.usable_bytes

    @property
    def weights_fit(self) -> bool:
        """Whether the weights alone fit in the usable memory."""
        return self.weight_bytes <= self.usable_bytes

    def _usable(self) -> str:
        return f"{format_bytes(self.usable_bytes)} usable ({self._ecc_note()})"

    def _ecc_note(self) -> str:
        return "ECC on" if self.ecc else "ECC off"

    def summary(self) -> str:
        """One line: 'fits: needs X of Y usable ...' or 'does not fit: needs X of Y usable ...'."""
        verdict = "fits" if self.fits else "does not fit"
        parts = (f"weights {format_bytes(self.weight_bytes)}, KV cache "
                 f"{format_bytes(self.kv_bytes)}, activations "
                 f"{format_bytes(self.activation_bytes)}")
        if self.reserved_bytes:
            parts += f", reserved {format_bytes(self.reserved_bytes)}"
        return f"{verdict}: needs {format_bytes(self.needed_bytes)} of {self._usable()}: {parts}"

    def table(self) -> Table:
        """The parts, their total and what is left, as a `Table`."""
        rows = [("weights", self.weight_bytes),
                (f"KV cache ({self.batch} x {self.seq_len:,} tokens, {self.kv_dtype})",
                 self.kv_bytes),
                (f"activations (estimate, {self.attention} attention)", self.activation_bytes)]
        if self.reserved_bytes:
            rows.append(("reserved", self.reserved_bytes))
        kv = f", KV cache {self.kv_dtype}" if self.kv_dtype != self.dtype else ""
        return Table(["memory", "bytes"], rows,
                     title=f"{self.model} on {self.accelerator}, batch {self.batch}, seq_len "
                           f"{self.seq_len:,}, {self.dtype}{kv}: "
                           f"{'fits' if self.fits else 'does not fit'}",
                     formats={"bytes": format_bytes},
                     footer=[("needed", self.needed_bytes),
                             (f"usable ({self._ecc_note()})", self.usable_bytes),
                             ("free" if self.fits else "short by",
                              abs(self.free_bytes))])

    def __str__(self) -> str:
        return self.table().to_text()

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


def memory_report(model: ModelConfig | str, accelerator: Accelerator | str, batch: int,
                  seq_len: int, dtype: str = "fp16", kv_dtype: str | None = None,
                  ecc: bool = True, reserved_bytes: float = 0.0, *,
                  attention: str = "standard",
                  prefill_tokens: int | None = None) -> MemoryReport:
    """Weights, KV cache of `batch` sequences of `seq_len` tokens, activations and a reserve,
    against `accelerator.usable_capacity(ecc)`.

    Activations are the module docstring's estimate for a prefill of `prefill_tokens`
    tokens per sequence (default `seq_len`), under `attention` ("standard" or "fused").
    For a request of S prompt and G output tokens pass seq_len = S + G - 1 (the cache at
    its last step) and prefill_tokens = S.
    """
    m, acc = get_model(model), get_accelerator(accelerator)
    check_positive("batch", batch, integer=True)
    check_positive("seq_len", seq_len, integer=True)
    check_non_negative("reserved_bytes", reserved_bytes)
    usable = usable_bytes(acc, ecc)
    prefill = seq_len if prefill_tokens is None else prefill_tokens
    check_positive("prefill_tokens", prefill, integer=True)
    dtype = normalize_dtype(dtype)
    kv_dtype = normalize_dtype(kv_dtype or dtype)
    return MemoryReport(
        model=m.name, accelerator=acc.name, batch=int(batch), seq_len=int(seq_len),
        prefill_tokens=int(prefill), dtype=dtype, kv_dtype=kv_dtype, attention=attention,
        ecc=ecc, weight_bytes=float(m.weight_bytes(dtype)),
        kv_bytes=float(m.kv_cache_bytes(int(seq_len), int(batch), kv_dtype)),
        activation_bytes=activation_bytes(m, int(batch), int(prefill), dtype, attention),
        reserved_bytes=float(reserved_bytes), usable_bytes=float(usable))
