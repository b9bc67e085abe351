"""Training a reference model on the corpus: AdamW, linear warm-up then cosine decay, on CPU.

Batches are random windows of the training tokens drawn with a `torch.Generator` (seeded
with settings.seed unless the caller passes one), and the initial weights come from the
model's own seeded generator: a run is a function of (config, tokens, settings, generator)
and the number of torch threads, and touches no global random state.
With a teacher, the loss mixes the corpus cross-entropy with the KL divergence from the
teacher's temperature-softened distribution (Hinton et al., 2015):

    loss = (1 - alpha) * CE(student, data) + alpha * T^2 * KL(p_teacher^T || p_student^T)

(T^2 keeps the soft term's gradient on the scale of the hard term's as T grows; the soft
term is `llmperf.measured.distill.distillation_loss`.)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..measured.distill import distillation_loss
from ..measured.model import MoEFeedForward, Transformer
from ..models import ModelConfig
from ..units import check_positive


@dataclass(frozen=True)
class TrainSettings:
    """steps of `batch` windows of `seq_len` tokens; peak learning rate lr after warmup steps."""

    steps: int
    batch: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    alpha: float = 0.5        # weight of the distillation term (with a teacher)
    temperature: float = 2.0  # softening of both distributions in the distillation term

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "seq_len"):
            check_positive(name, getattr(self, name), integer=True)
        check_positive("lr", self.lr)
        check_positive("temperature", self.temperature)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up over min(warmup, steps // 10) steps, then cosine decay to min_lr."""
        warm = min(self.warmup, self.steps // 10)
        if step < warm:
            return self.lr * (step + 1) / warm
        done = (step - warm) / max(1, self.steps - warm)
        floor = self.lr * self.min_lr_ratio
        return floor + (self.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * done))


@dataclass
class TrainResult:
    model: Transformer
    losses: list[float] = field(default_factory=list)  # training loss of each step
    seconds: float = 0.0


def _batch(tokens: torch.Tensor, s: TrainSettings, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(tokens) - s.seq_len - 1, (s.batch,), generator=gen)
    return torch.stack([tokens[i:i + s.seq_len + 1] for i in starts.tolist()])


def _loss(model: Transformer, window: torch.Tensor, s: TrainSettings,
          teacher: Transformer | None) -> torch.Tensor:
    logits = model(window[:, :-1]).float()
    V = logits.shape[-1]
    hard = F.cross_entropy(logits.reshape(-1, V), window[:, 1:].reshape(-1))
    if teacher is None or s.alpha == 0.0:
        return hard
    with torch.no_grad():
        teacher_logits = teacher(window[:, :-1])
    return (1 - s.alpha) * hard + s.alpha * distillation_loss(logits, teacher_logits,
                                                              s.temperature)


def train(config: ModelConfig, tokens: torch.Tensor, settings: TrainSettings,
          teacher: Transformer | None = None, log=None,
          generator: torch.Generator | None = None) -> TrainResult:
    """Train a fresh Transformer(config, seed=settings.seed) on 1-D int64 `tokens`; return
    it in eval mode with requires_grad False, with each step's loss and the seconds taken.

    Batches are drawn with `generator` (default: a CPU generator seeded with settings.seed);
    no global random state is read or set. MoE layers train in their dense form
    (`MoEFeedForward.dense`) and are routed again when training ends.
    """
    s = settings
    if tokens.dim() != 1 or len(tokens) <= s.seq_len + 1:
        raise ValueError(f"tokens must be 1-D and longer than seq_len + 1 = {s.seq_len + 1}")
    if generator is None:
        generator = torch.Generator().manual_seed(s.seed)
    elif not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator or None, got {generator!r}")
    model = Transformer(config, max_seq_len=s.seq_len, seed=s.seed)
    moe = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    result = TrainResult(model)
    start = time.perf_counter()
    try:
        for m in moe:
            m.dense = True
        model.requires_grad_(True).train()
        _steps(result, tokens, s, teacher, generator, log)
    finally:
        for m in moe:
            m.dense = False
        model.requires_grad_(False).eval()
    result.seconds = time.perf_counter() - start
    return result


def _steps(result: TrainResult, tokens: torch.Tensor, s: TrainSettings,
           teacher: Transformer | None, gen: torch.Generator, log) -> None:
    """s.steps AdamW steps on result.model, appending each loss to result.losses."""
    model = result.model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.99))
    start = time.perf_counter()
    for step in range(s.steps):
        for group in opt.param_groups:
            group["lr"] = s.lr_at(step)
        loss = _loss(model, _batch(tokens, s, gen), s, teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        result.losses.append(loss.item())
        if log is not None and (step % 50 == 0 or step == s.steps - 1):
            log(f"{model.config.name} step {step}/{s.steps} loss {result.losses[-1]:.4f} "
                f"{time.perf_counter() - start:.0f}s")
