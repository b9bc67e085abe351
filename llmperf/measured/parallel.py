"""Parallelism run for real over torch.distributed, in one place: the collectives timed, and
tensor, pipeline and expert parallelism of the reference model (each in its own module)."""
from .collectives import CollectiveTiming, measure_collectives
from .distributed import Launch, launch, launch_overhead
from .expert_parallel import ExpertParallelRun, run_expert_parallel
from .pipeline_parallel import PipelineRun, run_pipeline_parallel
from .tensor_parallel import TensorParallelRun, run_tensor_parallel

__all__ = ["CollectiveTiming", "ExpertParallelRun", "Launch", "PipelineRun", "TensorParallelRun",
           "launch", "launch_overhead", "measure_collectives",
           "run_expert_parallel", "run_pipeline_parallel", "run_tensor_parallel"]
