"""Where the measured layer runs: devices, dtypes, and waiting for queued GPU work."""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16",
            "half": "fp16"}


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device, allow_meta: bool = False) -> torch.device:
    """A torch.device for "cpu", "cuda[:i]" or "mps" (and "meta" when allowed: shapes
    without storage); ValueError if absent on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'mps', "
                         f"got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available here; use 'cpu'")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use 'cpu'")
    if dev.type == "meta" and allow_meta:
        return dev
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'mps', got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """fp32 and bf16 everywhere; fp16 on GPUs only (CPUs run it slowly or not at all)."""
    if isinstance(dtype, str):
        key = _ALIASES.get(dtype.lower(), dtype.lower())
        dtype = DTYPES.get(key, dtype)
    allowed = [torch.float32, torch.bfloat16] + ([torch.float16] if device.type != "cpu" else [])
    if dtype not in allowed:
        raise ValueError(f"dtype must be one of {[str(d) for d in allowed]} on {device.type}, "
                         f"got {dtype!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The llmperf name of a torch dtype ("fp32", "bf16", "fp16")."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype must be one of {list(DTYPES.values())}, got {dtype!r}")


def synchronize(device: torch.device | str | None) -> None:
    """Wait until queued GPU work on `device` is done (a no-op on the CPU)."""
    if device is None:
        return
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()
