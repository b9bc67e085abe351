"""Communication of tensor parallelism: the bytes GPUs exchange per token.

Megatron-style tensor parallelism splits each layer over `tp` GPUs: Q, K, V and
the FFN's first matrices by columns, the attention output projection and the
FFN's down projection by rows. Each row-split matrix ends with a partial sum
that must be all-reduced, so every layer does two all-reduces of the layer's
activation (d_model values per token). Shoeybi et al., "Megatron-LM",
https://arxiv.org/abs/1909.08053, section 3.

A ring all-reduce of M bytes over p GPUs makes each GPU send (and receive)
2 (p - 1) / p * M bytes: a reduce-scatter and an all-gather of (p - 1) / p * M each.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..models import ModelConfig, get_model
from ..units import bytes_per_element, check_non_negative, check_positive

ALLREDUCES_PER_LAYER = 2  # after the attention output projection and after the FFN down projection


def ring_allreduce_bytes(message_bytes: float, world_size: int) -> float:
    """Bytes each of `world_size` GPUs sends in a ring all-reduce of `message_bytes`."""
    check_non_negative("message_bytes", message_bytes)
    check_positive("world_size", world_size, integer=True)
    return 2 * (world_size - 1) / world_size * message_bytes


def tensor_parallel_layer_bytes(d_model: int, tp: int, dtype: str = "fp16") -> float:
    """Bytes each GPU sends per token for one layer: 2 ring all-reduces of d_model values."""
    check_positive("d_model", d_model, integer=True)
    check_positive("tp", tp, integer=True)
    return ALLREDUCES_PER_LAYER * ring_allreduce_bytes(d_model * bytes_per_element(dtype), tp)


def tensor_parallel_bytes_per_token(model: ModelConfig | str, tp: int, dtype: str = "fp16",
                                    layers: int | None = None) -> float:
    """Bytes each GPU sends per token over `layers` layers (default all) at tensor-parallel `tp`.

    2 all-reduces per layer of a d_model-long activation in `dtype`; 0 when tp = 1.
    """
    m = get_model(model)
    layers = m.n_layers if layers is None else layers
    check_positive("layers", layers, integer=True)
    return layers * tensor_parallel_layer_bytes(m.d_model, tp, dtype)


@dataclass(frozen=True)
class Link:
    """A GPU-to-GPU link. `bandwidth` counts both directions together, as datasheets do."""

    name: str
    bandwidth: float
    source: str

    @property
    def one_way(self) -> float:
        """B/s in each direction: what a ring all-reduce, sending and receiving at once, gets."""
        return self.bandwidth / 2


INTERCONNECTS: tuple[Link, ...] = (
    # NVIDIA H100 datasheet: NVLink 900 GB/s (SXM); PCIe Gen5 128 GB/s.
    Link("NVLink 4 (H100 SXM)", 900e9, "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"),
    # NVIDIA A100 datasheet: NVLink 600 GB/s (SXM).
    Link("NVLink 3 (A100 SXM)", 600e9, "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"),
    Link("PCIe Gen5 x16", 128e9, "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"),
    # NVIDIA A10 datasheet: PCIe Gen4 64 GB/s (the A10 has no NVLink).
    Link("PCIe Gen4 x16", 64e9, "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf"),
)
