"""The step time of an instance that spans several GPUs by tensor parallelism.

`TensorParallelStepTime` wraps a one-GPU step-time model (`LinearStepTime`,
`RooflineStepTime`): an iteration over `tp` GPUs takes the one-GPU seconds divided evenly
over them (each holds 1/tp of the weights and KV heads, and does 1/tp of the FLOPs), plus
the two all-reduces per layer of the iteration's activations (its tokens times d_model
values, Megatron-style: `llmperf.analytic.parallel`), timed on the link by
`collective_time`, with no overlap. The even split is optimistic by what every GPU repeats
(the norms and residual adds, a small share) and, when there are fewer KV heads than GPUs,
by the replicated KV reads; `lp.tensor_parallel_decode` counts both for one decode step.
Give it to `simulate` or `simulate_cluster` as `step_time`.
"""
from __future__ import annotations

from ..analytic.collectives import _as_link, collective_time
from ..analytic.parallel import ALLREDUCES_PER_LAYER, kv_head_share
from ..hardware import Link
from ..models import ModelConfig, get_model
from ..units import bytes_per_element
from .driver import StepTimeModel
from .scheduler import Batch


class TensorParallelStepTime:
    """seconds = step_time.iteration_s(batch) / tp
               + 2 n_layers collective_time("all_reduce", batch.tokens d_model bytes, tp, link)

    (see the module docstring). `tp` must divide the model's query heads, and divide or be
    a multiple of its KV heads (`lp.kv_head_share`).
    """

    def __init__(self, step_time: StepTimeModel, model: ModelConfig | str, link: Link | str,
                 tp: int, dtype: str = "fp16") -> None:
        # dtype: the activations' the all-reduces carry (16-bit even for int8/int4 weights)
        if not callable(getattr(step_time, "iteration_s", None)):
            raise ValueError("step_time must have an iteration_s(batch) method, such as a "
                             "LinearStepTime or a RooflineStepTime")
        m = get_model(model)
        kv_head_share(m, tp)  # checks tp against the heads
        self.step_time, self.model, self.link, self.tp = step_time, m, _as_link(link), int(tp)
        self.max_context_tokens = getattr(step_time, "max_context_tokens", None)
        self._token_bytes = m.d_model * bytes_per_element(dtype)
        self._allreduces = ALLREDUCES_PER_LAYER * m.n_layers
        self._communication: dict[int, float] = {}

    def communication_s(self, tokens: int) -> float:
        """Seconds of an iteration's all-reduces when it processes `tokens` tokens."""
        seconds = self._communication.get(tokens)
        if seconds is None:
            seconds = self._communication[tokens] = self._allreduces * collective_time(
                "all_reduce", tokens * self._token_bytes, self.tp, self.link)
        return seconds

    def iteration_s(self, batch: Batch) -> float:
        return self.step_time.iteration_s(batch) / self.tp + self.communication_s(batch.tokens)
