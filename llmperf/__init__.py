"""llmperf: analytic and measured performance of transformer LLM inference.

The analytic layer (units, hardware, models, cost, layers, roofline, perfmodel)
imports neither torch nor matplotlib. The measured layer (`llmperf.measure`,
`llmperf.transformer`) imports torch when it is first used.
"""
from .units import (GB, GiB, KB, KiB, MB, MiB, TB, TiB, GFLOP, TFLOP, BYTES_PER_ELEMENT,
                    bytes_per_element, format_bandwidth, format_bytes, format_flop_rate,
                    format_flops, format_seconds, normalize_dtype)
from .hardware import Accelerator, CATALOG as ACCELERATORS, get_accelerator, list_accelerators
from .models import ModelConfig, CATALOG as MODELS, get_model, list_models
from .cost import (Cost, activation_cost, attended_pairs, attention_cost, attention_scores_cost,
                   attention_values_cost, elementwise_cost, flash_attention_cost, fused_attention_cost,
                   grouped_matmul_cost, matmul_cost, norm_cost, softmax_cost)
from .layers import OpRow, StepCosts, experts_touched, layer_costs
from .roofline import (attainable_flops, bound, compute_time, memory_time, plot_roofline,
                       roofline_time)
from .parallel import INTERCONNECTS, Link, ring_allreduce_bytes, tensor_parallel_bytes_per_token, tensor_parallel_layer_bytes
from .perfmodel import (LatencyEstimate, critical_batch_size, decode_step_time, max_batch_size,
                        prefill_time, recompute_latency, roofline_latency, simple_latency)

__version__ = "0.1.0"
