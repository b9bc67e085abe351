"""Speculative generation with the reference model: a draft proposes, the target verifies.

Each step (one target forward pass) runs:

1. the draft proposes up to gamma tokens: a small model decoding on its own KV cache
   (`ModelDraft`), or a lookup of the last n tokens earlier in the text (`NgramDraft`,
   "prompt lookup": no model at all);
2. the target runs once over the last committed token and the drafts, gamma + 1 positions
   appended to its KV cache (like a short prefill), giving its distribution at each;
3. `verify` keeps a prefix of the drafts and adds one token.

Rolling back a cache is only a matter of bookkeeping: positions past the accepted prefix hold
keys and values of rejected drafts, and the next forward pass writes its own tokens over them
before attention reads them (`KVCache.update` writes, then returns positions 0..end-1).
`KVCache.rollback` marks the point; it moves no data. The drafts are in
`llmperf.measured.drafts`.

Temperature 0 is greedy: both distributions are one-hot at their argmax, so a draft is kept
exactly when it is the target's argmax, and the output equals
`llmperf.measured.generate.generate`'s.

Where the time goes: `speculative_generate` times every forward pass of the target and of a
draft model (waiting for its GPU work before and after), and every target step from end to
end. A step's host time is the rest: the n-gram lookup, building the input tensors, turning
logits into distributions, copying them to the host, verification, sampling and the
bookkeeping of the caches (`SpeculativeGeneration.host_s`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..analytic.speculative import acceptance_rate
from ..units import check_positive
from .cache import KVCache
from .device import synchronize
from .drafts import ModelDraft, NgramDraft, draft_distribution, timed_forward
from .generate import check_sampling, prompt_tensor
from .model import Transformer, check_model

PROBABILITY_TOLERANCE = 1e-3  # |sum(p) - 1| allowed: fp32 softmax over 1e5 ids sums within 1e-5


def _check_probs(name: str, probs: torch.Tensor, rows: int, vocab: int | None) -> None:
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] != rows \
            or (vocab is not None and probs.shape[1] != vocab) or not probs.is_floating_point():
        want = f"({rows}, {'V' if vocab is None else vocab})"
        got = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"{name} must be a float tensor of shape {want}, got {got}")
    if not bool(torch.isfinite(probs).all()) or bool((probs < 0).any()):
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    err = float((probs.double().sum(dim=-1) - 1).abs().max())
    if err > PROBABILITY_TOLERANCE:
        raise ValueError(f"{name}: each row must sum to 1 (within {PROBABILITY_TOLERANCE}), "
                         f"a row is {err:.3g} away")


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor,
           draft_tokens: torch.Tensor | list[int],
           generator: torch.Generator | None = None) -> list[int]:
    """The tokens one speculative step emits: the accepted drafts, then one token more.

    target_probs (gamma + 1, V): the target's next-token distribution p_i after the prefix and
    the first i drafts; draft_probs (gamma, V): the draft's q_i, from which draft_tokens
    (gamma,) were drawn. Draft i is accepted with probability min(1, p_i(x)/q_i(x)); at the
    first rejection the step ends with a token drawn from max(0, p_i - q_i), normalized;
    when all gamma are accepted it ends with a draw from p_gamma. The emitted tokens then
    follow the target's distribution exactly, whatever q is. A deterministic draft (an
    n-gram lookup) has a one-hot q; greedy decoding is the case where p is one-hot too.
    Every argument is checked here (reading the tensors back to the host);
    `speculative_generate`, which builds them itself, calls the unchecked `_verify`.
    """
    tokens = _checked_drafts(target_probs, draft_probs, draft_tokens)
    return _verify(target_probs, draft_probs, tokens, generator)


def _checked_drafts(target_probs: torch.Tensor, draft_probs: torch.Tensor,
                    draft_tokens: torch.Tensor | list[int]) -> torch.Tensor:
    """`verify`'s checks; the draft tokens as an int64 CPU tensor (gamma,)."""
    tokens = torch.as_tensor(draft_tokens)
    if tokens.dim() != 1 or tokens.numel() < 1 or tokens.is_floating_point():
        raise ValueError(f"draft_tokens must be a 1-d integer sequence of gamma >= 1 ids, got "
                         f"shape {tuple(tokens.shape)}, dtype {tokens.dtype}")
    gamma = tokens.numel()
    _check_probs("draft_probs", draft_probs, gamma, None)
    vocab = draft_probs.shape[1]
    _check_probs("target_probs", target_probs, gamma + 1, vocab)
    tokens = tokens.to(torch.int64).cpu()
    if int(tokens.min()) < 0 or int(tokens.max()) >= vocab:
        raise ValueError(f"draft_tokens must lie in [0, {vocab}), got {tokens.tolist()}")
    if bool((draft_probs.detach().cpu()[torch.arange(gamma), tokens] <= 0).any()):
        raise ValueError("draft_probs must give each drafted token a probability > 0 "
                         "(the draft drew it)")
    return tokens


def _verify(target_probs: torch.Tensor, draft_probs: torch.Tensor, tokens: torch.Tensor,
            generator: torch.Generator | None) -> list[int]:
    """`verify` on arguments known to be valid: tokens an int64 CPU tensor (gamma,)."""
    gamma = tokens.numel()
    p, q = target_probs.detach().cpu().double(), draft_probs.detach().cpu().double()
    rows = torch.arange(gamma)
    p_x, q_x = p[rows, tokens], q[rows, tokens]
    u = torch.rand(gamma, generator=generator, dtype=torch.float64)
    rejected = (u * q_x >= p_x).nonzero()  # accept when u < p/q, i.e. with probability min(1, p/q)
    n = int(rejected[0]) if rejected.numel() else gamma
    if n == gamma:
        last = p[gamma]
    else:
        last = (p[n] - q[n]).clamp(min=0)
        if float(last.sum()) <= 0:  # p == q up to rounding: a rejection then has probability 0
            last = p[n]
    extra = int(torch.multinomial(last / last.sum(), 1, generator=generator))
    return tokens[:n].tolist() + [extra]


@dataclass(frozen=True)
class SpeculativeGeneration:
    """New tokens, what each target step did (drafts proposed and drafts accepted), and where
    its time went.

    elapsed_s is prefill_s plus the sum of step_s: the clock is read once at the start, once
    after the prefill and once at the end of each step. A step's time splits into the
    target's forward pass, the draft model's forward passes, and the host time, the rest
    (`host_s`)."""

    tokens: list[int]
    proposed: tuple[int, ...]   # drafts verified in each target step (0: a plain step)
    accepted: tuple[int, ...]   # of those, how many were kept
    elapsed_s: float            # wall time, prefill included
    prompt_len: int
    prefill_s: float                     # the target's prefill and the draft's, until step 1
    step_s: tuple[float, ...]            # wall time of each target step
    target_forward_s: tuple[float, ...]  # in each step: the target's forward pass
    draft_forward_s: tuple[float, ...]   # and the draft model's (0 for a lookup)

    def __post_init__(self) -> None:
        _check_steps(self.proposed, self.accepted)
        n = len(self.proposed)
        if not len(self.step_s) == len(self.target_forward_s) == len(self.draft_forward_s) == n:
            raise ValueError(f"step_s, target_forward_s and draft_forward_s must hold one time "
                             f"per step ({n}), got {len(self.step_s)}, "
                             f"{len(self.target_forward_s)} and {len(self.draft_forward_s)}")

    @property
    def host_s(self) -> tuple[float, ...]:
        """Each step's time outside the forward passes: drafting bookkeeping (or the n-gram
        lookup), input tensors, distributions, verification, sampling, cache rollback."""
        return tuple(s - t - d for s, t, d in zip(self.step_s, self.target_forward_s,
                                                  self.draft_forward_s))

    def time_breakdown(self) -> dict[str, float]:
        """Seconds in the prefill, the target's and the draft's forward passes of the steps,
        and the steps' host time; they sum to elapsed_s."""
        return {"prefill": self.prefill_s, "target forward": sum(self.target_forward_s),
                "draft forward": sum(self.draft_forward_s), "host": sum(self.host_s)}

    @property
    def target_steps(self) -> int:
        """Target forward passes after the prefill."""
        return len(self.proposed)

    @property
    def tokens_per_step(self) -> float:
        """New tokens per target step."""
        return len(self.tokens) / self.target_steps

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.elapsed_s

    @property
    def alpha(self) -> float:
        """Acceptance rate: accepted over examined drafts (a step stops at its first rejection)."""
        return steps_alpha(self.proposed, self.accepted)

    def alpha_by_position(self, gamma: int) -> tuple[float | None, ...]:
        """`steps_alpha_by_position` of this run's steps."""
        return steps_alpha_by_position(self.proposed, self.accepted, gamma)


def _check_steps(proposed: Sequence[int], accepted: Sequence[int]) -> None:
    if len(proposed) != len(accepted) or any(not 0 <= a <= p for a, p in zip(accepted, proposed)):
        raise ValueError(f"proposed and accepted must be of one length with 0 <= accepted <= "
                         f"proposed at each step, got {list(proposed)} and {list(accepted)}")


def steps_alpha(proposed: Sequence[int], accepted: Sequence[int]) -> float:
    """Acceptance rate of some steps (drafts proposed and kept at each; pool several runs by
    concatenating them): accepted over examined, a step examining its drafts up to the first
    rejection (`llmperf.analytic.speculative.acceptance_rate`)."""
    _check_steps(proposed, accepted)
    rejected = sum(a < p for a, p in zip(accepted, proposed))
    return acceptance_rate(sum(accepted), rejected)


def steps_alpha_by_position(proposed: Sequence[int], accepted: Sequence[int],
                            gamma: int) -> tuple[float | None, ...]:
    """For draft positions i = 1..gamma: of the steps that examined their i-th draft (i
    proposed, the first i - 1 kept), the share that kept it; None where no step got there."""
    _check_steps(proposed, accepted)
    check_positive("gamma", gamma, integer=True)
    kept, reached = [0] * gamma, [0] * gamma
    for p, a in zip(proposed, accepted):
        for i in range(min(p, a + 1, gamma)):  # 0-based positions examined
            reached[i] += 1
            kept[i] += i < a
    return tuple(k / n if n else None for k, n in zip(kept, reached))


def _check_gamma(gamma: int) -> None:
    check_positive("gamma", gamma, integer=True)


@torch.inference_mode()
def speculative_generate(target: Transformer, draft: Transformer | ModelDraft | NgramDraft,
                         prompt: torch.Tensor | Sequence[int], max_new_tokens: int, gamma: int = 4,
                         temperature: float = 0.0, top_k: int | None = None,
                         seed: int = 0) -> SpeculativeGeneration:
    """Extend one prompt by max_new_tokens tokens, verifying up to gamma drafts per target step.

    `draft` is a Transformer sharing the target's vocabulary (wrapped in `ModelDraft`) or an
    `NgramDraft`. temperature and top_k apply to both models; the output follows the target's
    distribution (greedy: equals `llmperf.measured.generate.generate` token for token).
    """
    check_model(target)
    draft = ModelDraft(draft) if isinstance(draft, Transformer) else draft
    if not isinstance(draft, (ModelDraft, NgramDraft)):
        raise ValueError(f"draft must be a Transformer, ModelDraft or NgramDraft, got "
                         f"{type(draft).__name__}")
    vocab = target.config.vocab_size
    if isinstance(draft, ModelDraft) and draft.model.config.vocab_size != vocab:
        raise ValueError(f"draft vocab_size must equal the target's ({vocab}), "
                         f"got {draft.model.config.vocab_size}")
    check_positive("max_new_tokens", max_new_tokens, integer=True)
    _check_gamma(gamma)
    check_sampling(temperature, top_k, vocab)
    tokens = prompt_tensor(prompt, vocab)
    if tokens.shape[0] != 1:
        raise ValueError(f"prompt must be one sequence, got a batch of {tokens.shape[0]}")
    seq, T = tokens[0].tolist(), tokens.shape[1]
    capacity = T + max_new_tokens - 1
    models = [target] + ([draft.model] if isinstance(draft, ModelDraft) else [])
    if capacity > min(m.max_seq_len for m in models):
        raise ValueError(f"prompt ({T} tokens) + max_new_tokens - 1 = {capacity} is beyond "
                         f"max_seq_len={min(m.max_seq_len for m in models)}")
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    cache = KVCache(target, 1, capacity)
    if T > 1:  # the target holds every committed token but the last, which each step feeds
        target(tokens[:, :-1].to(target.device), 0, cache, last_only=True)
    draft.start(seq, capacity)
    for m in models:
        synchronize(m.device)
    clock = time.perf_counter()
    prefill_s = clock - start
    proposed, accepted, step_s, target_s, draft_s = [], [], [], [], []
    while len(seq) - T < max_new_tokens:
        drafted_before = draft.forward_s
        room = max_new_tokens - (len(seq) - T) - 1  # drafts that still fit
        drafts, q = ([], None) if room == 0 else draft.propose(seq, min(gamma, room),
                                                              temperature, top_k, gen)
        pos = len(seq) - 1
        chunk = torch.tensor([seq[pos:] + drafts], device=target.device)
        logits, forward_s = timed_forward(target, chunk, pos, cache)
        p = draft_distribution(logits[0], temperature, top_k).cpu()
        if drafts:
            q = F.one_hot(torch.tensor(drafts), vocab).double() if q is None else q
            new = _verify(p, q, torch.tensor(drafts, dtype=torch.int64), gen)
        else:
            new = [int(torch.multinomial(p[0], 1, generator=gen))]
        proposed.append(len(drafts))
        accepted.append(len(new) - 1)
        seq += new
        cache.rollback(len(seq) - 1)
        draft.rollback(len(seq) - 1)
        now = time.perf_counter()
        step_s.append(now - clock)
        target_s.append(forward_s)
        draft_s.append(draft.forward_s - drafted_before)
        clock = now
    return SpeculativeGeneration(seq[T:], tuple(proposed), tuple(accepted), clock - start, T,
                                 prefill_s, tuple(step_s), tuple(target_s), tuple(draft_s))
