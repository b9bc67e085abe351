"""Experiments the chapters run on the trained models, each beside its prediction.

- `kv_cache_effect`: what storing the KV cache in int8 changes (agreement, loss, the
  attention's relative error), against the exact cache.
- `cost_ratios` and `compare`: speculative decoding measured against plain decoding, beside
  the prediction from the measured alpha and cost ratios: E / (gamma c + 1), Leviathan et
  al.'s, and E / (gamma c + r) with r the measured verification cost. `compare` alternates
  plain and speculative rounds on the same prompts, and times the step costs in every round
  too, so a busy moment on a shared machine hits all of them. It also reports where the
  speculative runs' time went (prefill, the target's and the draft's forward passes, host
  work between them), so that the time per token predicted from c and r, plus the measured
  host time, can be set beside the measured time per token
  (`SpeculationResult.predicted_s_per_token_with_host`).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..analytic.speculative import expected_tokens_per_step
from ..units import check_positive
from .cache import KVCache, paged_cache_for
from .device import synchronize
from .drafts import ModelDraft, NgramDraft
from .generate import generate
from .hooks import removed_after
from .measure import windows
from .model import Transformer
from .speculative import (
    speculative_generate,
    steps_alpha,
    steps_alpha_by_position,
)
from .timing import benchmark


@dataclass(frozen=True)
class CacheEffect:
    """What storing the KV cache in another form changes, over `tokens` predicted positions.

    greedy_agreement: share of positions whose argmax is the exact cache's; loss_*: mean
    next-token loss (nats) with the exact and the changed cache; attention_error[l]: relative
    error ||y' - y|| / ||y|| of layer l's attention output."""

    greedy_agreement: float
    loss_exact_nats: float
    loss_changed_nats: float
    attention_error: tuple[float, ...]
    tokens: int


@torch.inference_mode()
def kv_cache_effect(model: Transformer, tokens: torch.Tensor, kv_dtype: str = "int8",
                    seq_len: int = 128, max_windows: int = 8, block_size: int = 16) -> CacheEffect:
    """Run windows of `tokens` through the model twice, with an exact paged cache and one in
    `kv_dtype`, every position attending to the stored keys and values (as decode would)."""
    win = windows(tokens, seq_len, max_windows).to(model.device)
    x, target = win[:, :-1], win[:, 1:]
    outputs, logits = {}, {}
    for kind in (None, kv_dtype):
        captured: list[torch.Tensor] = []
        hooks = [layer.attention.register_forward_hook(
            lambda _m, _i, out, store=captured: store.append(out.float()))
            for layer in model.layers]
        with removed_after(hooks):
            _, view = paged_cache_for(model, len(x), seq_len, block_size, kind)
            logits[kind] = model(x, 0, view).float()
        outputs[kind] = captured
    exact, changed = logits[None], logits[kv_dtype]
    errors = tuple(float((b - a).norm() / a.norm()) for a, b in zip(outputs[None],
                                                                     outputs[kv_dtype]))

    def loss(lg: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]),
                                                       target.reshape(-1)))

    agree = float((exact.argmax(-1) == changed.argmax(-1)).float().mean())
    return CacheEffect(agree, loss(exact), loss(changed), errors, target.numel())


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


def step_after_other_s(model: Transformer, other: Transformer, other_calls: int = 2,
                       context: int = 96, repeat: int = 50,
                       rounds: int = 3) -> tuple[float, float]:
    """Median seconds of `model`'s one-token decode step after `context` cached tokens, timed
    repeated on its own (as `cost_ratios` times it) and right after `other_calls` decode steps
    of `other` (as a speculative loop runs it, after the draft's steps): (alone, after).
    Each is the median over `rounds` rounds of the median of `repeat` timed steps; the
    other model's steps are not timed."""
    check_positive("other_calls", other_calls, integer=True)
    check_positive("context", context, integer=True)
    check_positive("repeat", repeat, integer=True)
    check_positive("rounds", rounds, integer=True)
    caches = {}
    for m in (model, other):
        caches[id(m)] = KVCache(m, 1, context + 1)
    token = {id(m): torch.zeros(1, 1, dtype=torch.int64, device=m.device) for m in (model, other)}

    def step(m: Transformer) -> None:
        m(token[id(m)], context, caches[id(m)])

    def timed() -> float:
        synchronize(model.device)
        start = time.perf_counter()
        step(model)
        synchronize(model.device)
        return time.perf_counter() - start

    alone, after = [], []
    with torch.inference_mode():
        for m in (model, other):
            m(torch.zeros(1, context, dtype=torch.int64, device=m.device), 0, caches[id(m)])
        for _ in range(rounds):
            step(model)  # warm up
            alone.append(statistics.median(timed() for _ in range(repeat)))
            samples = []
            for _ in range(repeat):
                for _ in range(other_calls):
                    step(other)
                synchronize(other.device)
                samples.append(timed())
            after.append(statistics.median(samples))
    return statistics.median(alone), statistics.median(after)


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
    # Where the speculative runs' time went, per new token, from the run of median wall time
    # of each prompt (`SpeculativeGeneration.time_breakdown`); the four sum to
    # spec_s_per_token. target_step_s: the benchmarked target decode step that c and r are
    # relative to (`cost_ratios`).
    target_step_s: float
    prefill_s_per_token: float
    target_forward_s_per_token: float
    draft_forward_s_per_token: float
    host_s_per_token: float

    @property
    def speedup(self) -> float:
        return self.tokens_per_s / self.plain_tokens_per_s

    @property
    def spec_s_per_token(self) -> float:
        """Measured wall time per new token, speculative decoding (prefill included)."""
        return 1 / self.tokens_per_s

    @property
    def plain_s_per_token(self) -> float:
        """Measured wall time per new token, plain decoding (prefill included)."""
        return 1 / self.plain_tokens_per_s

    @property
    def predicted_forward_s_per_token(self) -> float:
        """The forward passes per new token as the benchmarks price them: each target step
        costs gamma c + r benchmarked decode steps, over the measured tokens per step."""
        return (self.gamma * self.c + self.verify_ratio) * self.target_step_s \
            / self.tokens_per_step

    @property
    def predicted_s_per_token_with_host(self) -> float:
        """predicted_forward_s_per_token plus the measured prefill and host time per token:
        what the measured time per token should be if the forward passes inside the loop
        cost what the benchmarks say."""
        return self.predicted_forward_s_per_token + self.prefill_s_per_token \
            + self.host_s_per_token

    @property
    def unexplained_s_per_token(self) -> float:
        """Measured minus predicted_s_per_token_with_host: the forward passes inside the loop
        against their benchmarked price (positive: dearer in the loop)."""
        return self.spec_s_per_token - self.predicted_s_per_token_with_host

    def speedup_factors(self) -> dict[str, float]:
        """The measured speedup as tau / (gamma c + r) (tau measured) times four measured
        factors, whose product it is exactly:

        - "host": the benchmarked forward passes per token over those plus the measured host
          time (below 1 by what the host work costs speculation);
        - "prefill": the same with the prefill added, over it with the host time alone;
        - "forward passes in the loop": predicted_s_per_token_with_host over the measured
          time per token (1 when the loop's forward passes cost what the benchmarks say);
        - "plain baseline": plain decoding's measured time per token over the benchmarked
          decode step (above 1: plain decoding has host work and a prefill of its own)."""
        forwards = self.predicted_forward_s_per_token
        with_host = forwards + self.host_s_per_token
        return {"tau / (gamma c + r)": self.tokens_per_step / (self.gamma * self.c
                                                               + self.verify_ratio),
                "host": forwards / with_host,
                "prefill": with_host / self.predicted_s_per_token_with_host,
                "forward passes in the loop": self.predicted_s_per_token_with_host
                / self.spec_s_per_token,
                "plain baseline": self.plain_s_per_token / self.target_step_s}

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
    """Every (draft, gamma) against plain decoding; times are medians over `rounds`. Each
    round runs plain decoding and every (draft, gamma) on every prompt, then `cost_ratios`
    (one round of it per draft), so that the step times pricing the runs are taken beside
    them."""
    check_positive("rounds", rounds, integer=True)
    plain_s: list[list[float]] = [[] for _ in prompts]
    runs: dict[tuple[str, int], list[list]] = {(n, g): [[] for _ in prompts]
                                               for n in drafts for g in gammas}
    plain_tokens = []
    ratio_rounds: dict[str, list[CostRatios]] = {name: [] for name in drafts}
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
            for name, d in drafts.items():  # in every round, beside the runs they price
                ratio_rounds[name].append(cost_ratios(
                    target, d if isinstance(d, Transformer) else None, gammas, context, rounds=1))
    plain_total = sum(statistics.median(s) for s in plain_s)
    n_tokens = max_new_tokens * len(prompts)
    ratios = {name: CostRatios(statistics.median(c.target_step_s for c in rs),
                               statistics.median(c.draft_step_s for c in rs),
                               {g: statistics.median(c.verify[g] for c in rs) for g in gammas})
              for name, rs in ratio_rounds.items()}
    results = []
    for (name, g), per_prompt in runs.items():
        first = [p[0] for p in per_prompt]  # the steps are the same in every round
        proposed = [n for o in first for n in o.proposed]  # every prompt's steps, pooled
        accepted = [n for o in first for n in o.accepted]
        # each prompt's run of median wall time (the lower median for an even count of rounds)
        typical = [sorted(p, key=lambda o: o.elapsed_s)[(len(p) - 1) // 2] for p in per_prompt]
        spec_total = sum(o.elapsed_s for o in typical)
        parts = {k: sum(o.time_breakdown()[k] for o in typical) / n_tokens
                 for k in ("prefill", "target forward", "draft forward", "host")}
        results.append(SpeculationResult(
            name, g, temperature, n_tokens / plain_total, n_tokens / spec_total,
            steps_alpha(proposed, accepted), steps_alpha_by_position(proposed, accepted, g),
            n_tokens / sum(o.target_steps for o in first), ratios[name].c, ratios[name].verify[g],
            all(o.tokens == t for o, t in zip(first, plain_tokens)) if temperature == 0 else None,
            ratios[name].target_step_s, parts["prefill"], parts["target forward"],
            parts["draft forward"], parts["host"]))
    return results
