"""llmperf: analytic and measured performance of transformer LLM inference.

The folders follow the book: every claim derived, then measured.

- `units`, `names`, `table`, `hardware`, `models`: the vocabulary (dtypes and their bytes,
  the accelerator and model catalogs); `plots` the book's one plotting style; `cli` the
  `llmperf` command.
- `analytic/` (torch-free): `cost` and `layers` count FLOPs and bytes (`steptable` is the
  table `step_costs` returns), `memory` what a batch needs in memory and whether it fits,
  `roofline` and `perfmodel` turn the counts into times, `collectives` the time of
  all-reduces and other collectives on a `Link`, `parallel` the layouts over several GPUs
  (tensor-parallel bytes and decode, the pipeline bubble), `batching` what a batch costs
  and how many fit, and the optimization chapters' `fusion`, `quant`, `speculative` and `sparsity`.
- `serving/` (torch-free): requests, the scheduler, KV memory (reserved or paged, with
  prefix caching), step times, metrics, the simulator, and clusters of instances
  (`cluster`, `disaggregated`).
- `measured/` (PyTorch): the reference `model`, every KV `cache`, the ragged batch of one
  engine iteration (`varlen`), `generate`, the serving `engine`, the parallel runs over
  `torch.distributed` (`distributed`, `collectives`, `tensor_parallel`, `pipeline_parallel`,
  `expert_parallel`), and the measurements that sit beside the analytic modules of the same
  name (`fusion` is measured by `kernels`; `quant`, `speculative`, `sparsity`), with
  `decode_layouts`, `pruning`, `moe`, `early_exit`, `distill`, `hooks`, `measure`, `host`,
  `timing`, `device` and `hf`.
- `trained/`: the small trained models of chapters 6 to 9 (nothing in `measured/` imports it).
- `grading/`: the autograder.

`import llmperf` loads the analytic API as `lp.*` and neither torch nor matplotlib;
`lp.plot_roofline` and `lp.plot_dependency_graph` import matplotlib when a plot is drawn.
"""
from .analytic.collectives import (
    COLLECTIVES,
    bytes_sent_per_rank,
    collective_steps,
    collective_time,
    fit_alpha_beta,
)
from .analytic.cost import (
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
from .analytic.layers import (
    ATTENTION_ALGORITHMS,
    attention_op_rows,
    experts_touched,
    step_costs,
)
from .analytic.memory import MemoryReport, activation_bytes, memory_report
from .analytic.parallel import (
    TensorParallelDecode,
    kv_head_share,
    kv_transfer_time,
    pipeline_bubble_fraction,
    ring_allreduce_bytes,
    tensor_parallel_bytes_per_token,
    tensor_parallel_decode,
    tensor_parallel_layer_bytes,
)
from .analytic.perfmodel import (
    DoesNotFitWarning,
    LatencyEstimate,
    decode_step_time,
    ffn_critical_batch,
    max_batch_size,
    prefill_time,
    recompute_latency,
    requests_that_fit,
    roofline_latency,
    simple_decode_step_time,
    simple_latency,
)
from .analytic.roofline import attainable_flops, bound, compute_time, memory_time, roofline_time
from .analytic.steptable import KINDS, OpRow, PlacedOpRow, PlacedStepCosts, StepCosts
from .hardware import CATALOG as ACCELERATORS
from .hardware import (
    INTERCONNECTS,
    LINKS,
    Accelerator,
    Link,
    get_accelerator,
    get_link,
    list_accelerators,
    list_links,
)
from .models import CATALOG as MODELS
from .models import ModelConfig, get_model, list_models
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
