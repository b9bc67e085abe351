"""Step-time models: how long one iteration takes, given its `Batch`.

`LinearStepTime` is the form serving simulators fit to measurements: a fixed cost per
iteration, a cost per token processed and a cost per token of KV read.
`fit_linear_step_time` fits it by least squares. `RooflineStepTime` builds the time from
`step_costs` on a catalog accelerator, with fused attention by default, as serving
systems run it (FlashAttention-style kernels that never write the score matrix out).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..analytic.layers import step_costs
from ..hardware import Accelerator, get_accelerator
from ..models import ModelConfig, get_model
from ..units import check_non_negative
from .scheduler import Batch

ATTENTION_KERNEL_ROWS = ("qk", "softmax", "sv", "attention")


@dataclass(frozen=True)
class LinearStepTime:
    """seconds = base_s + per_token_s * batch.tokens + per_kv_token_s * batch.kv_tokens,
    plus wake_s when the batch starts from idle (`Batch.after_idle`).

    tokens: prefill chunk tokens plus one per decode. kv_tokens: for a chunk, the keys
    its queries attend to (the prompt cached before it, and itself); for a decode, the
    request's prompt plus the tokens it has generated (its cache and its new token).
    wake_s: what an iteration costs more when the instance was idle before it (on a CPU,
    caches another program filled and a core that slowed down; on a GPU, clocks that
    ramp up); 0 by default.
    """

    base_s: float
    per_token_s: float
    per_kv_token_s: float
    wake_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("base_s", "per_token_s", "per_kv_token_s", "wake_s"):
            check_non_negative(name, getattr(self, name))

    def iteration_s(self, batch: Batch) -> float:
        seconds = (self.base_s + self.per_token_s * batch.tokens
                   + self.per_kv_token_s * batch.kv_tokens)
        return seconds + self.wake_s if batch.after_idle else seconds


def fit_linear_step_time(samples: Iterable[tuple[float, ...]]) -> LinearStepTime:
    """Least-squares fit of `LinearStepTime` to (tokens, kv_tokens, seconds) samples, or
    to (tokens, kv_tokens, seconds, after_idle) samples, which fit wake_s too (the
    engine's `step_samples`; wake_s is 0 when no sample starts from idle).

    Unconstrained least squares over [1, tokens, kv_tokens(, after_idle)]; a fit with a
    negative coefficient is rejected with ValueError (it would predict negative costs), not
    clipped: measure more varied batches (several token counts and context lengths).
    """
    data = np.asarray(list(samples), dtype=float)
    if data.ndim != 2 or data.shape[1] not in (3, 4):
        raise ValueError("samples must be (tokens, kv_tokens, seconds) triples or "
                         "(tokens, kv_tokens, seconds, after_idle) quadruples")
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        raise ValueError("samples must hold finite numbers >= 0")
    columns = [np.ones(len(data)), data[:, 0], data[:, 1]]
    names = ["base_s", "per_token_s", "per_kv_token_s"]
    if data.shape[1] == 4 and data[:, 3].any() and not data[:, 3].all():
        columns.append(data[:, 3])
        names.append("wake_s")
    design = np.column_stack(columns)
    if np.linalg.matrix_rank(design) < len(columns):
        raise ValueError(f"samples must vary tokens and kv_tokens independently (at least "
                         f"{len(columns)} samples not on one line) to determine "
                         f"{len(columns)} coefficients")
    coef, *_ = np.linalg.lstsq(design, data[:, 2], rcond=None)
    tol = 1e-12 * max(1.0, float(np.max(np.abs(coef))))
    negative = [f"{n}={c:.3g}" for n, c in zip(names, coef) if c < -tol]
    if negative:
        raise ValueError(f"the least-squares fit has negative coefficients "
                         f"({', '.join(negative)}); measure more varied batches rather than "
                         "trust it")
    # what remains below 0 is rounding noise of an exactly zero coefficient
    return LinearStepTime(*(max(float(c), 0.0) for c in coef))


class _RowPolynomials:
    """Each selected row's (FLOPs, bytes) as a polynomial in one size x >= 1.

    `step_costs` counts with arithmetic that is polynomial in the step's size (affine in
    its tokens, quadratic in a prompt's length for attention), so degree + 1 calls fix
    every coefficient. The fit is used only if it reproduces `step_costs` exactly at the
    sizes `check_at`; otherwise (a mixture of experts, a sliding window) every size is
    counted by `step_costs` itself.
    """

    def __init__(self, costs_at, degree: int, check_at: tuple[int, ...]) -> None:
        self._costs_at = costs_at
        xs = np.arange(1, degree + 2, dtype=float)
        values = np.array([costs_at(int(x)) for x in xs])
        self._shape = values.shape[1:]
        vander = np.vander(xs, degree + 1, increasing=True)
        self._coef = np.linalg.solve(vander, values.reshape(len(xs), -1))
        self.exact = all(np.allclose(self._poly(x), costs_at(x), rtol=1e-9, atol=0.0)
                         for x in check_at)

    def _poly(self, x: int) -> np.ndarray:
        powers = float(x) ** np.arange(self._coef.shape[0])
        return (powers @ self._coef).reshape(self._shape)

    def __call__(self, x: int) -> np.ndarray:
        """[rows, 2]: FLOPs and bytes of the selected rows at size x."""
        return self._poly(x) if self.exact else self._costs_at(x)


class RooflineStepTime:
    """Iteration time from the per-operator roofline of `step_costs` on an accelerator.

    A mixed iteration of T tokens (prefill chunks plus one token per decode) is costed as:
    - every operator that is not attention (projections, FFN, norms, embedding) once,
      for T tokens: the weights are read once per iteration, as in `step_costs`;
    - the LM head once, for one row per request that yields a token this iteration;
    - the attention operators (qk, softmax, sv; or the fused kernel) of each request on
      its own: a decode reads its own cache, and a prefill chunk of c tokens after s
      cached ones costs c / (s + c) of a prefill of s + c tokens. That share is exact for
      the scores and the S and P traffic of the standard algorithm and for a chunk
      starting at 0; for s > 0 it undercounts the chunk's K and V reads (K and V of all
      s + c tokens are read, not c / (s + c) of them) and, for the fused kernel, the
      causal mask's saving.
    Each operator takes max(FLOPs / peak, bytes / bandwidth), and the times add up. So a
    single-sequence step, prefill or decode, equals `step_costs(...).on(acc).time_s` with
    the same `attention`.

    `attention` is "fused" by default, the one-kernel attention that serving systems run
    (FlashAttention and its kin: the score matrix never goes to memory, causal pairs
    are skipped); "standard" costs the lecture's algorithm, which writes and reads the
    scores and is slower for long prompts.

    Decodes are summed in closed form: one decode's attention time is a + b * kv_tokens
    (checked at construction for contexts up to the model's max_seq_len; ValueError where
    a sliding window or a change of bound makes it otherwise). Other costs are cached by
    size, so thousands of requests simulate in about a second.
    """

    def __init__(self, model: ModelConfig | str, accelerator: Accelerator | str,
                 dtype: str = "fp16", kv_dtype: str | None = None,
                 attention: str = "fused") -> None:
        self.model, self.accelerator = get_model(model), get_accelerator(accelerator)
        self.dtype, self.kv_dtype, self.attention = dtype, kv_dtype, attention
        self._peak, self._bw = self.accelerator.peak(dtype), self.accelerator.mem_bandwidth
        self.max_context_tokens = self.model.max_seq_len
        top = self.max_context_tokens
        self._dense = _RowPolynomials(lambda t: self._costs("decode", t, 1, "dense"), 1, (97, top))
        self._head = _RowPolynomials(lambda n: self._costs("decode", n, 1, "head"), 1, (97, top))
        self._prefill = _RowPolynomials(lambda n: self._costs("prefill", 1, n, "attn"), 2,
                                        (97, top))
        self._decode_a_s, self._decode_b_s = self._decode_line()
        self._cache: dict[tuple[str, int], float] = {}

    def _costs(self, phase: str, batch: int, seq_len: int, part: str) -> np.ndarray:
        step = step_costs(self.model, phase, batch=batch, seq_len=seq_len, dtype=self.dtype,
                           kv_dtype=self.kv_dtype, attention=self.attention)
        keep = {"attn": lambda n: n in ATTENTION_KERNEL_ROWS, "head": lambda n: n == "lm_head",
                "dense": lambda n: n not in ATTENTION_KERNEL_ROWS and n != "lm_head"}[part]
        return np.array([[r.flops, r.bytes] for r in step.rows if keep(r.name)], dtype=float)

    def _seconds(self, costs: np.ndarray) -> float:
        return float(np.maximum(costs[:, 0] / self._peak, costs[:, 1] / self._bw).sum())

    def _decode_line(self) -> tuple[float, float]:
        """(a, b) with one decode's attention seconds = a + b * kv_tokens, after checking."""
        rows = _RowPolynomials(lambda n: self._costs("decode", 1, n, "attn"), 1,
                               (97, self.max_context_tokens - 1))
        ends = [rows(1), rows(self.max_context_tokens - 1)]
        compute_bound = [c[:, 0] / self._peak > c[:, 1] / self._bw for c in ends]
        if not rows.exact or not np.array_equal(*compute_bound):
            raise ValueError(f"one decode's attention time for {self.model.name} on "
                             f"{self.accelerator.name} is not linear in its context up to "
                             f"{self.max_context_tokens} tokens (a sliding window, or an "
                             "operator changing bound): RooflineStepTime cannot sum decodes")
        t2, t3 = self._seconds(rows(1)), self._seconds(rows(2))  # kv_tokens 2 and 3
        return t2 - 2 * (t3 - t2), t3 - t2

    def _cached(self, part: str, size: int) -> float:
        key = (part, size)
        seconds = self._cache.get(key)
        if seconds is None:
            costs = {"dense": self._dense, "head": self._head, "prefill": self._prefill}[part]
            seconds = self._cache[key] = self._seconds(costs(size))
        return seconds

    def iteration_s(self, batch: Batch) -> float:
        """Seconds of one iteration of `batch` (see the class docstring)."""
        chunk_s, logits = 0.0, len(batch.decode)
        for chunk in batch.prefill:
            keys = chunk.kv_tokens
            if keys > self.max_context_tokens:
                raise ValueError(f"a prompt of {keys} tokens exceeds {self.model.name}'s "
                                 f"max_seq_len {self.max_context_tokens}")
            chunk_s += self._cached("prefill", keys) * chunk.tokens / keys
            logits += chunk.completes_prompt
        seconds = self._cached("dense", batch.tokens) + chunk_s
        seconds += len(batch.decode) * self._decode_a_s + self._decode_b_s * batch.decode_kv_tokens
        return seconds + (self._cached("head", logits) if logits else 0.0)
