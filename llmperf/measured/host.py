"""Measure this machine's roofline: peak matmul FLOP/s per dtype and memory bandwidth.

`measure_host()` returns an `Accelerator`, so `ridge_point`, `roofline_time`,
`plot_roofline` and `perfmodel` apply to the reader's own CPU or GPU.

- Peak FLOP/s: the median rate of square n x n matmuls, 2 n^3 FLOPs each, at a size
  large enough to keep the matrix units busy (n = 2048 on a CPU, 8192 on a GPU).
  A dtype is first probed on a small matmul; one that runs far slower than fp32
  (fp16 on most CPUs, which have no fp16 matrix instructions) is skipped, and the
  Accelerator's `notes` say so.
- Bandwidth: the median rate of two streaming kernels over buffers much larger
  than the last-level cache: a copy (bytes read + bytes written = 2 N) and a sum
  (N bytes read). The faster of the two is the bandwidth; both are in `notes`.
  Write-allocate traffic of the copy is not counted, as in STREAM.

Each call measures afresh (no hidden cache): keep the `Accelerator` it returns and pass it
on. A figure the machine does not report (the last-level cache's size, the memory's) is
replaced by a stated guess, and the `notes` say which.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Callable, Sequence

import torch

from ..hardware import Accelerator
from ..units import GB, MiB, format_bandwidth, format_flop_rate, normalize_dtype
from .device import DTYPES, resolve_device
from .timing import benchmark

_TRIED = ("fp32", "bf16", "fp16")
_SLOW = 0.5  # skip a dtype whose probe runs below this fraction of fp32's rate


def _median_time(fn: Callable[[], object], device: torch.device, repeat: int,
                 best: bool = False) -> float:
    timing = benchmark(fn, warmup=2, repeat=repeat, device=device)
    return timing.min_s if best else timing.median_s


def matmul_flops(dtype: str = "fp32", n: int = 2048, device: str | torch.device = "cpu",
                 repeat: int = 5, best: bool = False) -> float:
    """FLOP/s of an n x n by n x n matmul in `dtype`: 2 n^3 / median (or, if best,
    fastest) seconds."""
    dev = resolve_device(device)
    dt = DTYPES[normalize_dtype(dtype)]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dev, dt)
    b = torch.randn(n, n, generator=gen).to(dev, dt)
    out = torch.empty(n, n, device=dev, dtype=dt)
    return 2.0 * n**3 / _median_time(lambda: torch.mm(a, b, out=out), dev, repeat, best)


def stream_bandwidth(kernel: str = "copy", size_bytes: float = 512 * MiB,
                     device: str | torch.device = "cpu", repeat: int = 5) -> float:
    """B/s of a streaming kernel over fp32 buffers of `size_bytes` each.

    "copy": y = x, moving 2 * size_bytes. "read": x.sum(), moving size_bytes.
    """
    if kernel not in ("copy", "read"):
        raise ValueError(f"kernel must be 'copy' or 'read', got {kernel!r}")
    dev = resolve_device(device)
    n = int(size_bytes) // 4
    x = torch.empty(n, device=dev).fill_(1.0)  # touch every page before timing
    if kernel == "copy":
        y = torch.empty_like(x).fill_(0.0)
        return 2.0 * n * 4 / _median_time(lambda: y.copy_(x), dev, repeat)
    return n * 4.0 / _median_time(lambda: x.sum(), dev, repeat)


LLC_GUESS = 32 * MiB  # the last-level cache assumed when sysfs does not say
MEMORY_GUESS = 16 * GB  # the memory assumed when the system does not say: a typical laptop


def _last_level_cache_bytes() -> tuple[int, str | None]:
    """Size of the CPU's largest cache from sysfs, and a note when it had to be guessed."""
    sizes = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    for entry in os.listdir(base) if os.path.isdir(base) else []:
        try:
            with open(f"{base}/{entry}/size") as f:
                text = f.read().strip()
            sizes.append(int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]])
        except (OSError, ValueError, KeyError, IndexError):
            continue
    if not sizes:
        return LLC_GUESS, (f"last-level cache unreadable from sysfs: assumed "
                           f"{LLC_GUESS / MiB:.0f} MiB")
    return max(sizes), None


def _memory_capacity(dev: torch.device) -> tuple[float, str | None]:
    """Bytes of the device's memory, and a note when it had to be guessed."""
    if dev.type == "cuda":
        return float(torch.cuda.get_device_properties(dev).total_memory), None
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), None
    except (ValueError, OSError, AttributeError):
        return MEMORY_GUESS, f"memory size unreadable: assumed {MEMORY_GUESS / GB:.0f} GB"


def _stream_buffer_bytes(llc_bytes: float, memory_bytes: float, quick: bool) -> int:
    """Bytes of each streaming buffer: several times the last-level cache, so that the
    stream measures memory and not cache, but never more than 1/16 of the memory.

    A virtual machine often reports its host's whole L3 (hundreds of MiB shared by
    every guest); sixteen times that would not fit beside anything else, and a slice
    of a few GiB already streams from DRAM.
    """
    wanted = max(4 * llc_bytes, 64 * MiB) if quick else max(4 * llc_bytes, 512 * MiB)
    ceiling = (256 * MiB) if quick else min(2 * 2**30, memory_bytes / 16)
    return int(min(wanted, max(ceiling, 64 * MiB)))


def _device_label(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda, {torch.cuda.get_device_name(dev)}"
    if dev.type == "mps":
        return "mps"
    return f"cpu, {torch.get_num_threads()} threads"


def measure_host(dtypes: Sequence[str] | None = None, quick: bool = False,
                 device: str | torch.device = "cpu", progress: bool | None = None) -> Accelerator:
    """This machine's roofline as an `Accelerator` (peak FLOP/s per dtype, bandwidth, memory).

    dtypes: those to try (default fp32, bf16, fp16); fp32 is always measured, and
    others are kept only if they run at least half as fast as fp32. quick: smaller
    matmuls and buffers (a rough figure in about a second, for tests and demos; the
    buffers still exceed the last-level cache). progress: a progress bar (default:
    on unless quick). Every call measures; `notes` record what was skipped or guessed.
    """
    dev = resolve_device(device)
    wanted = tuple(dict.fromkeys(normalize_dtype(d) for d in (dtypes or _TRIED)))
    for d in wanted:
        if d not in _TRIED:
            raise ValueError(f"dtypes may contain {list(_TRIED)}, got {d!r}")
    wanted = ("fp32",) + tuple(d for d in wanted if d != "fp32")
    gpu = dev.type != "cpu"
    n = (2048 if quick else 8192) if gpu else (512 if quick else 2048)
    llc, llc_note = (0, None) if gpu else _last_level_cache_bytes()
    capacity, capacity_note = _memory_capacity(dev)
    size = _stream_buffer_bytes(llc, capacity, quick)
    repeat = 3 if quick else 7
    steps = [("matmul", d) for d in wanted] + [("stream", "copy"), ("stream", "read")]
    if progress is None:
        progress = not quick
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="measure_host", leave=False)

    peaks, streams = {}, {}
    notes = [note for note in (llc_note, capacity_note) if note]
    fp32_probe = None
    for kind, what in steps:
        if kind == "stream":
            streams[what] = stream_bandwidth(what, size, dev, repeat)
            continue
        if not gpu:
            probe = matmul_flops(what, 256, dev, repeat=5, best=True)  # best: robust to a busy host
            fp32_probe = fp32_probe or probe
            # A busy host can slow the fp32 probe too, so also skip what would take > 1 s a call.
            if what != "fp32" and (probe < _SLOW * fp32_probe or 2.0 * n**3 / probe > 1.0):
                notes.append(f"{what} skipped: {format_flop_rate(probe)} on a 256^3 probe, "
                             f"far below fp32's {format_flop_rate(fp32_probe)}")
                continue
        peaks[what] = matmul_flops(what, n, dev, repeat)
    best = max(streams, key=streams.get)
    notes.insert(0, f"matmul {n}x{n}x{n}; streams over {size / MiB:.0f} MiB buffers: "
                    + ", ".join(f"{k} {format_bandwidth(v)}" for k, v in streams.items())
                    + f"; bandwidth = {best}" + ("; quick mode" if quick else ""))
    acc = Accelerator(name=f"this machine ({_device_label(dev)})", peak_flops=peaks,
                      mem_bandwidth=streams[best], mem_capacity=capacity,
                      source="measured by llmperf.measured.host.measure_host",
                      notes="; ".join(notes))
    return acc


def median_host(runs: Sequence[Accelerator]) -> Accelerator:
    """One `Accelerator` from repeated `measure_host` runs: for each dtype that every run
    measured, the median peak FLOP/s, and the median bandwidth, so that a busy moment during one
    run moves the figures little. Keep the runs to report their spread."""
    if not runs:
        raise ValueError("runs must hold at least one measure_host result, got none")
    dtypes = [d for d in runs[0].dtypes if all(d in a.dtypes for a in runs)]
    return dataclasses.replace(
        runs[0], peak_flops={d: statistics.median(a.peak(d) for a in runs) for d in dtypes},
        mem_bandwidth=statistics.median(a.mem_bandwidth for a in runs),
        notes=f"{runs[0].notes}; median of {len(runs)} runs")
