"""llmperf: analytic and measured performance of transformer LLM inference.

The analytic layer (units, hardware, models, cost, layers, roofline, perfmodel, parallel,
table, and the optimization chapters' quantsize, speculative, sparse_cost and the serving
simulator) imports numpy at most, and neither torch nor matplotlib. The plotting helpers
`plot_roofline` and `plot_dependency_graph` live in `llmperf.plots`; `lp.plot_roofline`
reaches them too, importing matplotlib only when a plot is drawn. The measured layer
(`measure`, `host`, the reference model in `model`, `generate` and `hf`, and `engine`,
`kvcache`, `kernels`, `quant`, `speculative_generate`, `moe`, `pruning`, `sparsity`,
`early_exit`, `distill`, `trained`) imports torch when it is first used.
"""
from .cost import (
    Cost,
    activation_cost,
    attended_pairs,
    attention_cost,
    attention_scores_cost,
    attention_values_cost,
    elementwise_cost,
    flash_attention_cost,
    fused_attention_cost,
    grouped_matmul_cost,
    matmul_cost,
    norm_cost,
    softmax_cost,
)
from .hardware import CATALOG as ACCELERATORS
from .hardware import Accelerator, get_accelerator, list_accelerators
from .layers import (
    ATTENTION_ALGORITHMS,
    OpRow,
    PlacedOpRow,
    PlacedStepCosts,
    StepCosts,
    experts_touched,
    layer_costs,
    step_costs,
)
from .models import CATALOG as MODELS
from .models import ModelConfig, get_model, list_models
from .parallel import (
    INTERCONNECTS,
    Link,
    ring_allreduce_bytes,
    tensor_parallel_bytes_per_token,
    tensor_parallel_layer_bytes,
)
from .perfmodel import (
    LatencyEstimate,
    critical_batch_size,
    decode_step_time,
    max_batch_size,
    prefill_time,
    recompute_latency,
    roofline_latency,
    simple_latency,
)
from .roofline import attainable_flops, bound, compute_time, memory_time, roofline_time
from .table import Table
from .units import (
    BYTES_PER_ELEMENT,
    GB,
    GFLOP,
    KB,
    MB,
    TB,
    TFLOP,
    GiB,
    KiB,
    MiB,
    TiB,
    bytes_per_element,
    format_bandwidth,
    format_bytes,
    format_flop_rate,
    format_flops,
    format_seconds,
    normalize_dtype,
    storage_bytes,
)

__version__ = "0.1.0"

_PLOTS = ("plot_roofline", "plot_dependency_graph")


def __getattr__(name: str) -> object:
    """`lp.plot_roofline` and `lp.plot_dependency_graph`, loaded on first use."""
    if name in _PLOTS:
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'llmperf' has no attribute {name!r}")
