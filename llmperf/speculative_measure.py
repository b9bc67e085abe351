"""Speculative decoding measured against plain decoding, beside the prediction from measured
alpha and cost ratios.

`cost_ratios` times, on the machine at hand, one decode step of the draft and of the target
and one target step over gamma + 1 appended positions (the verification). `compare` runs plain
greedy or sampled decoding and speculative decoding on the same prompts, in alternating rounds
(so a busy moment on a shared machine hits both), and reports per gamma: tokens per second,
the acceptance rate alpha (overall and per draft position), tokens per target step, and the
speedup measured beside two predictions, E / (gamma c + 1) (Leviathan et al.'s, a verification
as cheap as a decode step) and E / (gamma c + r) with r the measured verification cost.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .generate import KVCache, generate
from .model import Transformer
from .speculative import acceptance_rate, expected_tokens_per_step
from .speculative_generate import ModelDraft, NgramDraft, speculative_generate
from .timing import benchmark
from .units import check_positive


@dataclass(frozen=True)
class CostRatios:
    """Measured step times: c = draft step / target step; verify[g] = target step over g + 1
    positions / target decode step."""

    target_step_s: float
    draft_step_s: float
    verify: dict[int, float]

    @property
    def c(self) -> float:
        return self.draft_step_s / self.target_step_s


def _step_s(model: Transformer, tokens: int, context: int, repeat: int) -> float:
    cache = KVCache(model, 1, context + tokens)
    chunk = torch.zeros(1, tokens, dtype=torch.int64, device=model.device)
    with torch.inference_mode():
        model(torch.zeros(1, context, dtype=torch.int64, device=model.device), 0, cache)
        return benchmark(lambda: model(chunk, context, cache), warmup=2, repeat=repeat,
                         device=model.device).median_s


def cost_ratios(target: Transformer, draft: Transformer | None, gammas: Sequence[int],
                context: int = 96, repeat: int = 9, rounds: int = 3) -> CostRatios:
    """Median step times after `context` cached tokens (no draft: a zero-cost lookup), each
    the median of `rounds` rounds that time every step in turn, and each verification ratio
    the median of its rounds' ratios (a busy moment on a shared machine hits one round)."""
    check_positive("context", context, integer=True)
    check_positive("rounds", rounds, integer=True)
    target_s, draft_s, verify = [], [], {g: [] for g in gammas}
    for _ in range(rounds):
        t = _step_s(target, 1, context, repeat)
        target_s.append(t)
        draft_s.append(0.0 if draft is None else _step_s(draft, 1, context, repeat))
        for g in gammas:
            verify[g].append(_step_s(target, g + 1, context, repeat) / t)
    return CostRatios(statistics.median(target_s), statistics.median(draft_s),
                      {g: statistics.median(v) for g, v in verify.items()})


@dataclass(frozen=True)
class SpeculationResult:
    """Speculative decoding with one draft and gamma, against plain decoding, same prompts."""

    draft: str
    gamma: int
    temperature: float
    plain_tokens_per_s: float
    tokens_per_s: float
    alpha: float
    alpha_by_position: tuple[float | None, ...]
    tokens_per_step: float
    c: float
    verify_ratio: float
    identical: bool | None   # greedy: every output equal to plain decoding's (None: sampled)

    @property
    def speedup(self) -> float:
        return self.tokens_per_s / self.plain_tokens_per_s

    @property
    def predicted_tokens_per_step(self) -> float:
        return expected_tokens_per_step(self.alpha, self.gamma)

    @property
    def predicted_speedup(self) -> float:
        """E(alpha, gamma) / (gamma c + 1): verification priced as one decode step."""
        return self.predicted_tokens_per_step / (self.gamma * self.c + 1)

    @property
    def predicted_speedup_measured_verify(self) -> float:
        """E(alpha, gamma) / (gamma c + r), r the measured verification cost."""
        return self.predicted_tokens_per_step / (self.gamma * self.c + self.verify_ratio)


def compare(target: Transformer, drafts: dict[str, Transformer | NgramDraft],
            prompts: Sequence[Sequence[int]], max_new_tokens: int, gammas: Sequence[int],
            temperature: float = 0.0, rounds: int = 3, seed: int = 0,
            context: int = 96) -> list[SpeculationResult]:
    """Every (draft, gamma) against plain decoding; times are medians over `rounds`."""
    check_positive("rounds", rounds, integer=True)
    plain_s: list[list[float]] = [[] for _ in prompts]
    runs: dict[tuple[str, int], list[list]] = {(n, g): [[] for _ in prompts]
                                               for n in drafts for g in gammas}
    plain_tokens = []
    with torch.inference_mode():
        for r in range(rounds):
            for i, prompt in enumerate(prompts):
                out = generate(target, list(prompt), max_new_tokens, temperature, seed=seed + i)
                plain_s[i].append(out.timestamps_s[-1])
                if r == 0:
                    plain_tokens.append(out.tokens[0].tolist())
                for name, draft in drafts.items():
                    for g in gammas:
                        d = ModelDraft(draft) if isinstance(draft, Transformer) else draft
                        runs[(name, g)][i].append(speculative_generate(
                            target, d, list(prompt), max_new_tokens, g, temperature, seed=seed + i))
    plain_total = sum(statistics.median(s) for s in plain_s)
    n_tokens = max_new_tokens * len(prompts)
    ratios = {name: cost_ratios(target, d if isinstance(d, Transformer) else None, gammas,
                                context, rounds=rounds)
              for name, d in drafts.items()}
    results = []
    for (name, g), per_prompt in runs.items():
        first = [p[0] for p in per_prompt]  # the steps are the same in every round
        accepted = sum(sum(o.accepted) for o in first)
        rejected = sum(sum(a < p for a, p in zip(o.accepted, o.proposed)) for o in first)
        spec_total = sum(statistics.median(o.elapsed_s for o in p) for p in per_prompt)
        results.append(SpeculationResult(
            name, g, temperature, n_tokens / plain_total, n_tokens / spec_total,
            acceptance_rate(accepted, rejected), _by_position(first, g),
            n_tokens / sum(o.target_steps for o in first), ratios[name].c, ratios[name].verify[g],
            all(o.tokens == t for o, t in zip(first, plain_tokens)) if temperature == 0 else None))
    return results


def _by_position(outs, gamma: int) -> tuple[float | None, ...]:
    """alpha at each draft position, pooled over the runs' steps."""
    kept, reached = [0] * gamma, [0] * gamma
    for o in outs:
        for a, p in zip(o.accepted, o.proposed):
            for i in range(min(p, a + 1)):
                reached[i] += 1
                kept[i] += i < a
    return tuple(k / n if n else None for k, n in zip(kept, reached))
