"""Contextual sparsity of a ReLU FFN: which neurons are zero for this token, computing only the
others, and predicting them cheaply (after Deja Vu, Liu et al., ICML 2023,
https://arxiv.org/abs/2310.17157).

Everything reads the reference model through forward hooks; nothing in `llmperf.measured.model`
changes. For a two-matrix FFN y = W_down relu(W_up x), neuron j contributes nothing when
(W_up x)_j <= 0, so computing only the active neurons (rows of W_up, columns of W_down) gives
the dense output exactly.

The predictor here is low-rank, as Deja Vu's is, but fitted in closed form instead of trained:
P = W_up^T V_r V_r^T, with V_r the top r right singular vectors of the pre-activations
X W_up^T on calibration inputs X, the rank-r map that best reproduces those pre-activations
(least squares, the Eckart-Young theorem). It costs r (d_model + d_ff) multiply-adds per token
against d_model d_ff for W_up; a neuron is predicted active when its predicted pre-activation
exceeds -margin.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..units import check_non_negative, check_positive
from .hooks import removed_after
from .model import MLP, Transformer


def _mlps(model: Transformer) -> list[MLP]:
    ffns = [block.feed_forward for block in model.layers]
    if not all(isinstance(f, MLP) and f.act is F.relu for f in ffns):
        raise ValueError("model must have two-matrix ReLU FFNs (ffn_kind 'mlp', activation "
                         "'relu'), e.g. llmperf.trained.load('relu')")
    return ffns


@dataclass(frozen=True)
class FFNTrace:
    """Each layer's FFN inputs (N, d_model) and hidden activations relu(W_up x) (N, d_ff)."""

    inputs: list[torch.Tensor]
    hidden: list[torch.Tensor]

    def active(self, layer: int) -> torch.Tensor:
        """(N, d_ff) boolean: which neurons are non-zero for each token of `layer`."""
        return self.hidden[layer] != 0

    def sparsity(self) -> list[torch.Tensor]:
        """Per layer, each token's fraction of zero neurons (N,)."""
        return [(h == 0).float().mean(dim=-1) for h in self.hidden]


@torch.no_grad()
def trace_ffn(model: Transformer, tokens: torch.Tensor) -> FFNTrace:
    """Run tokens (B, T) through `model` and keep every FFN's inputs and hidden activations."""
    inputs: dict[int, torch.Tensor] = {}
    hidden: dict[int, torch.Tensor] = {}
    handles = []
    for i, mlp in enumerate(_mlps(model)):
        handles.append(mlp.register_forward_pre_hook(
            lambda m, a, i=i: inputs.__setitem__(i, a[0].reshape(-1, a[0].shape[-1]))))
        handles.append(mlp.w2.register_forward_pre_hook(
            lambda m, a, i=i: hidden.__setitem__(i, a[0].reshape(-1, a[0].shape[-1]))))
    with removed_after(handles):
        model(tokens)
    n = len(model.layers)
    return FFNTrace([inputs[i] for i in range(n)], [hidden[i] for i in range(n)])


class GatheredFFN:
    """A ReLU FFN that computes only given neurons: W_down[:, active] relu(W_up[active] x).

    W_down is kept transposed, (d_ff, d_model), so a neuron's down-projection weights are one
    contiguous row (Deja Vu stores it the same way). The active rows of W_up are gathered
    (copied) and multiplied; the down projection is one `embedding_bag`, a weighted sum of the
    active rows of W_down^T read in place. Equal to the dense FFN when every neuron outside
    `active` is zero for these inputs.
    """

    def __init__(self, mlp: MLP) -> None:
        if not isinstance(mlp, MLP) or mlp.act is not F.relu:
            raise ValueError("mlp must be a two-matrix ReLU FFN "
                             "(llmperf.measured.model.MLP with relu)")
        self.w_up = mlp.w1.weight                               # (d_ff, d_model)
        self.w_down_t = mlp.w2.weight.t().contiguous()          # (d_ff, d_model)
        self.b_up, self.b_down = mlp.w1.bias, mlp.w2.bias

    def __call__(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """The FFN of x (N, d_model) over neuron indices `active` (a,), shared by the N rows."""
        if active.dim() != 1 or active.dtype not in (torch.int32, torch.int64):
            raise ValueError("active must be a 1-D tensor of neuron indices")
        if x.dim() != 2:
            raise ValueError(f"x must be 2-D (tokens, d_model), got shape {tuple(x.shape)}")
        b = None if self.b_up is None else self.b_up[active]
        h = F.relu(F.linear(x, self.w_up.index_select(0, active), b))    # (N, a)
        y = F.embedding_bag(active.expand(x.shape[0], -1), self.w_down_t,
                            per_sample_weights=h, mode="sum")             # (N, d_model)
        return y if self.b_down is None else y + self.b_down


def pre_activation_basis(mlp: MLP, calibration_inputs: torch.Tensor) -> torch.Tensor:
    """(r_max, d_ff) right singular vectors of the pre-activations X W_up^T of inputs X (N, d),
    in decreasing order of singular value, without forming X W_up^T. With X = Q R (QR),
    X W_up^T = Q M for M = R W_up^T (only d_model x d_ff) and Q with orthonormal columns, so
    both have M's right singular vectors: from the eigenvectors U and eigenvalues S^2 of the
    small Gram matrix M M^T (in float64), V^T = S^-1 U^T M. Directions whose singular value
    is below 1e-6 of the largest are dropped (r_max <= d_model)."""
    r = torch.linalg.qr(calibration_inputs.double(), mode="r").R
    m = r @ mlp.w1.weight.double().T
    eigenvalues, u = torch.linalg.eigh(m @ m.T)                       # ascending
    singular = eigenvalues.flip(0).clamp(min=0).sqrt()
    u = u.flip(1)[:, singular > 1e-6 * singular[0]]
    singular = singular[:u.shape[1]]
    return ((u.T @ m) / singular[:, None]).to(torch.float32)


class LowRankPredictor:
    """Predicts a layer's active neurons from its FFN input with a rank-r map (see module)."""

    def __init__(self, mlp: MLP, calibration_inputs: torch.Tensor, rank: int,
                 basis: torch.Tensor | None = None) -> None:
        check_positive("rank", rank, integer=True)
        w_up = mlp.w1.weight.float()
        if basis is None:
            basis = pre_activation_basis(mlp, calibration_inputs)
        if rank > len(basis):
            raise ValueError(f"rank must be at most {len(basis)}, got {rank}")
        v = basis[:rank]                                             # (r, d_ff)
        self.down = w_up.T @ v.T                                     # (d_model, r)
        self.up = v                                                  # (r, d_ff)
        self.bias = None if mlp.w1.bias is None else mlp.w1.bias.float()
        self.rank = rank

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted pre-activations (..., d_ff)."""
        s = (x.float() @ self.down) @ self.up
        return s if self.bias is None else s + self.bias

    def predict(self, x: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """(..., d_ff) boolean: neurons predicted active (score > -margin)."""
        check_non_negative("margin", margin)
        return self.scores(x) > -margin


@dataclass(frozen=True)
class PredictionQuality:
    recall: float     # fraction of the truly active neurons that were predicted active
    computed: float   # fraction of all neurons predicted active (what the layer computes)
    true_active: float  # fraction of all neurons truly active


def prediction_quality(predicted: torch.Tensor, active: torch.Tensor) -> PredictionQuality:
    """Recall and sizes of a predicted active set against the true one (boolean tensors)."""
    if predicted.shape != active.shape:
        raise ValueError(f"predicted and active must have one shape, got "
                         f"{tuple(predicted.shape)} and {tuple(active.shape)}")
    true = int(active.sum())
    hit = int((predicted & active).sum())
    return PredictionQuality(hit / true if true else 1.0, float(predicted.float().mean()),
                             float(active.float().mean()))


def fit_predictors(model: Transformer, tokens: torch.Tensor,
                   ranks: Sequence[int]) -> dict[int, list[LowRankPredictor]]:
    """For each rank, one predictor per layer, fitted on the FFN inputs that tokens (B, T)
    produce (one basis per layer, shared by the ranks)."""
    trace = trace_ffn(model, tokens)
    mlps = _mlps(model)
    bases = [pre_activation_basis(mlp, x) for mlp, x in zip(mlps, trace.inputs)]
    return {r: [LowRankPredictor(mlp, x, r, basis)
                for mlp, x, basis in zip(mlps, trace.inputs, bases)] for r in ranks}


@contextmanager
def predicted_ffn(model: Transformer, predictors: Sequence[LowRankPredictor],
                  margin: float = 0.0) -> Iterator[None]:
    """Within the block, every FFN computes only its predicted neurons (misses are dropped):
    the output of W_down (relu(W_up x) * predicted)."""
    mlps = _mlps(model)
    if len(predictors) != len(mlps):
        raise ValueError(f"predictors must have one per layer ({len(mlps)}), got "
                         f"{len(predictors)}")

    def replace(predictor):
        def hook(mlp, args, output):
            x = args[0]
            keep = predictor.predict(x, margin).to(x.dtype)
            return mlp.w2(mlp.act(mlp.w1(x)) * keep)
        return hook

    handles = [m.register_forward_hook(replace(p)) for m, p in zip(mlps, predictors)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
