"""Starting a group of processes that talk through `torch.distributed`, and timing their talk.

`launch(fn, world_size, ...)` starts `world_size` processes with `torch.multiprocessing`, joins
them into one process group (gloo on CPUs; NCCL when asked, one GPU per rank), calls
`fn(rank, world_size, *args)` in each, and returns what each returned. It is an ordinary
function, so a notebook cell can call it; `fn` must be a module-level function of an
importable module (the children import it by name): a lambda, a nested function or one
defined in the notebook itself is refused with a ValueError.

- Rendezvous: TCP on 127.0.0.1, on a port free when the launch starts.
- Start method: "forkserver" where the platform has it, else "spawn". Both start clean
  processes (no copy of the parent's threads); a fork server imports torch once, so after the
  first launch a new group starts in well under a second instead of paying torch's import
  (about 1.5 s of CPU, and as much again for the first model built on the meta device) in
  every process again. `start_method="spawn"` gives the other.
- Threads: each rank runs `threads` intra-op threads; by default 1 when world_size >= 2, so
  ranks do not fight over a laptop's few cores, and torch's default for a single rank.
- A model goes to the ranks as a file (`model=`): its weights are saved once in the launch's
  temporary folder and each rank maps them (torch.load(mmap=True)) into its own Transformer,
  instead of through shared memory, which containers often keep small.
- Results come back as files in that folder (torch.save), whatever their size, and the group
  is destroyed in every rank, also when `fn` raises; the parent then raises the error of the
  rank that failed first.

`CommClock` wraps the collectives a run makes and keeps how long each call took.
"""
from __future__ import annotations

import multiprocessing
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp

from ..units import check_positive
from .device import synchronize
from .model import Transformer, check_model

BACKENDS = ("gloo", "nccl")
START_METHODS = ("forkserver", "spawn")
DEFAULT_TIMEOUT_S = 300.0  # a rank waiting longer than this for its peers gives up
# What the fork server imports before it forks any rank: torch, the model, and torch._dynamo,
# which building any module on the meta device (as Transformer does) imports on first use,
# about a second of CPU that every rank would otherwise pay again.
PRELOAD = [__name__, "torch._dynamo"]


@dataclass(frozen=True)
class Launch:
    """What one launch returned: each rank's result, and what starting the group cost.

    startup_s: from the call until the last rank had joined the process group (starting the
    processes, importing, the rendezvous); wall_s: the whole call, results read back."""

    results: tuple[Any, ...]
    world_size: int
    backend: str
    threads: int
    start_method: str
    startup_s: float
    wall_s: float


@dataclass(frozen=True)
class ModelFile:
    """A Transformer saved for the ranks: config, dtype, RoPE length and a weights file."""

    config: Any
    dtype: torch.dtype
    max_seq_len: int
    path: Path

    @classmethod
    def save(cls, model: Transformer, folder: Path) -> ModelFile:
        check_model(model)
        path = Path(folder) / "model.pt"
        torch.save(model.state_dict(), path)
        return cls(model.config, model.dtype, model.max_seq_len, path)

    def load(self, device: torch.device | str = "cpu") -> Transformer:
        """The same model in this process: shapes on meta, then the saved weights (mapped,
        not copied, on a CPU) and the RoPE table recomputed."""
        model = Transformer(self.config, device="meta", dtype=self.dtype,
                            max_seq_len=self.max_seq_len)
        model.to_empty(device=device)
        weights = torch.load(self.path, mmap=True, weights_only=True)
        model.load_state_dict(weights, strict=True, assign=torch.device(device).type == "cpu")
        model.rope.reset()
        return model.eval()


def rank_device(rank: int, backend: str) -> torch.device:
    """Where rank `rank`'s tensors live: the CPU with gloo, GPU `rank` with NCCL."""
    return torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_world_size(world_size: int) -> None:
    check_positive("world_size", world_size, integer=True)


def _check_importable(fn: Callable[..., Any]) -> None:
    """ValueError unless the ranks can import fn by name: not a lambda, not a nested function,
    not one defined in a notebook or at an interactive prompt (a __main__ without a file)."""
    name = getattr(fn, "__qualname__", "")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not callable(fn) or "<" in name or (fn.__module__ == "__main__" and main_file is None):
        raise ValueError(f"fn must be a module-level function of an importable module (each "
                         f"rank imports it by name), got {fn!r}; in a notebook, put it in a "
                         f".py file next to the notebook and import it from there")


def _check_launch(world_size: int, backend: str, threads: int | None,
                  start_method: str | None) -> str:
    check_world_size(world_size)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(f"backend 'nccl' needs one GPU per rank: world_size={world_size}, "
                         f"GPUs: {torch.cuda.device_count()}")
    if threads is not None:
        check_positive("threads", threads, integer=True)
    method = start_method or ("forkserver" if "forkserver" in
                              multiprocessing.get_all_start_methods() else "spawn")
    if method not in START_METHODS or method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start_method must be one of {START_METHODS} (and available here), "
                         f"got {start_method!r}")
    return method


def launch(fn: Callable[..., Any], world_size: int, args: tuple = (), *,
           model: Transformer | None = None, backend: str = "gloo", threads: int | None = None,
           start_method: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> Launch:
    """Run fn(rank, world_size, *args) in `world_size` processes joined into one group.

    With `model`, each rank gets its own copy first: fn(rank, world_size, model_copy, *args).
    Returns a `Launch` whose `results[r]` is what rank r returned (it must pickle).
    """
    _check_importable(fn)
    method = _check_launch(world_size, backend, threads, start_method)
    check_positive("timeout_s", timeout_s)
    if threads is None and world_size >= 2:
        threads = 1
    if method == "forkserver":  # the server imports once what every rank needs
        multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmperf-dist-") as folder:
        spec = ModelFile.save(model, Path(folder)) if model is not None else None
        rank_args = (fn, world_size, args, spec, free_port(), backend, threads, timeout_s,
                     folder, start)
        try:
            torch_mp.start_processes(_rank_main, rank_args, nprocs=world_size, join=True,
                                     start_method=method)
        except Exception as error:  # torch reports whichever failed rank it noticed first
            raise _first_failure(Path(folder), error) from error
        outputs = [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False)
                   for r in range(world_size)]
    joined = max(out["joined_at"] for out in outputs)
    return Launch(tuple(out["result"] for out in outputs), world_size, backend,
                  outputs[0]["threads"], method, joined - start, time.perf_counter() - start)


def _rank_main(rank: int, fn: Callable[..., Any], world_size: int, args: tuple,
               spec: ModelFile | None, port: int, backend: str, threads: int | None,
               timeout_s: float, folder: str, start: float) -> None:
    """One rank: join the group, run fn, save its result; leave the group whatever happens.
    (perf_counter reads CLOCK_MONOTONIC on Linux, one clock for every process of a machine.)"""
    if threads is not None:
        torch.set_num_threads(threads)
    device = rank_device(rank, backend)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=timeout_s))
    joined_at = time.perf_counter()
    try:
        head = (spec.load(device),) if spec is not None else ()
        result = fn(rank, world_size, *head, *args)
        torch.save({"result": result, "joined_at": joined_at,
                    "threads": torch.get_num_threads()}, Path(folder) / f"rank{rank}.pt")
    except BaseException:
        failed = f"{time.perf_counter()!r}\n{traceback.format_exc()}"
        (Path(folder) / f"rank{rank}.error").write_text(failed)
        raise
    finally:
        dist.destroy_process_group()


def _first_failure(folder: Path, error: Exception) -> Exception:
    """The error of the rank that failed first: its peers then fail too (a connection reset
    in the middle of a collective), and torch may report one of those instead."""
    failures = []
    for path in folder.glob("rank*.error"):
        when, trace = path.read_text().split("\n", 1)
        failures.append((float(when), path.stem.removeprefix("rank"), trace))
    if not failures:
        return error
    _, rank, trace = min(failures)
    return RuntimeError(f"rank {rank} failed first:\n{trace}")


def _nothing(rank: int, world_size: int) -> None:
    dist.barrier()


def launch_overhead(world_size: int, repeats: int = 3, **launch_args: Any) -> list[Launch]:
    """`repeats` launches of a group that only meets at a barrier: what starting and stopping
    `world_size` processes costs, before any work (the first may start the fork server)."""
    check_positive("repeats", repeats, integer=True)
    return [launch(_nothing, world_size, **launch_args) for _ in range(repeats)]


@dataclass
class CommClock:
    """Seconds spent inside each collective call of this rank, in call order.

    With gloo a call returns when this rank's part is done, which includes waiting for a
    slower peer to arrive: on a busy machine that wait shows up as communication."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    calls_s: list[float] = field(default_factory=list)

    def timed(self, collective: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        collective(*args, **kwargs)
        synchronize(self.device)
        self.calls_s.append(time.perf_counter() - start)

    def all_reduce(self, x: torch.Tensor) -> None:
        """Sum x over the group, in place."""
        self.timed(dist.all_reduce, x)

    def all_to_all(self, output: torch.Tensor, input: torch.Tensor,
                   output_splits: list[int], input_splits: list[int]) -> None:
        """Rows input_splits[r] of `input` go to rank r; rows from rank r land in `output`."""
        self.timed(dist.all_to_all_single, output, input, output_splits, input_splits)


def model_with_blocks(model: Transformer, config: Any,
                      blocks: list[torch.nn.Module]) -> Transformer:
    """A Transformer of `config` running `blocks` as its layers, sharing `model`'s embedding,
    final norm, head and RoPE tables (not copied): a rank's model whose blocks hold only its
    part of each layer runs the reference model's own forward pass, and `KVCache` sizes
    itself from `config` (a rank's heads only)."""
    shell = Transformer(config, device="meta", dtype=model.dtype, max_seq_len=model.max_seq_len)
    shell.tok_embeddings, shell.norm = model.tok_embeddings, model.norm
    shell.output, shell.rope = model.output, model.rope
    shell.layers = torch.nn.ModuleList(blocks)
    return shell
