"""Accelerators: peak compute, memory bandwidth, memory capacity, and the ridge point.

All peaks are *dense* (no 2:4 structured sparsity): datasheets often print the
sparse figure, twice the dense one, with an asterisk. Where a datasheet gives a
tensor-core peak with fp16 and with fp32 accumulation, we take fp32
accumulation, which is what PyTorch's fp16 matmuls use.

Bandwidths are decimal (1 GB/s = 1e9 B/s), as datasheets print them. Memory
capacities are not: DRAM and HBM come in binary sizes, so the "24 GB" of an A10's
datasheet is 24 GiB = 25.77e9 bytes, and that is what `mem_capacity` holds. The
H200's "141 GB" is binary too (see its entry).

Less than `mem_capacity` is free for tensors. GDDR6 parts (T4, L4, A10, A10G,
L40S) protect memory with *inline* ECC: with ECC on, the default on data-center
boards, 1/16 of the memory holds check bits, so an A10 offers 24,576 MiB x 15/16 =
23,040 MiB (nvidia-smi shows 23,028 MiB) and a T4 15,360 MiB of its 16 GiB. Turning
ECC off (`nvidia-smi -e 0` and a reboot) gives the whole 24 GiB back, without the
protection. NVIDIA's NVML reference says it in one line: "Enabling ECC reduces the
amount of total available memory, due to the extra required parity bits"
(nvmlDeviceGetMemoryInfo, https://docs.nvidia.com/deploy/nvml-api/group__nvmlDeviceQueries.html).
HBM parts (A100, H100, H200) keep ECC bits beside the data and lose no
capacity to it. `Accelerator.usable_capacity()` applies the 1/16 where it applies,
and every count of what fits uses it (`max_batch_size`, `kv_capacity_tokens`,
`memory_report`, each with `ecc=True` by default; pass `ecc=False` for the whole
`mem_capacity`); the CUDA context and the framework then take a few hundred MiB more,
which their `reserved_bytes=...` sets aside.
Each entry cites its source.

`Link` describes how one GPU reaches its peers (NVLink, PCIe, InfiniBand): its bandwidth
(both directions together, per GPU, as datasheets print it; `one_way` is half) and the
latency of one message, the two constants of the alpha-beta model of communication
(`llmperf.analytic.collectives`). `LINKS` is their catalog, `get_link(name)` the lookup.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .names import build_index, lookup
from .units import GB, TFLOP, GiB, check_non_negative, check_positive, normalize_dtype

INLINE_ECC_FRACTION = 1 / 16  # of a GDDR6 part's memory, holding check bits when ECC is on


@dataclass(frozen=True)
class Accelerator:
    """One accelerator's limits, in SI units.

    peak_flops: dense peak FLOP/s for each dtype the part runs on its matrix units.
    mem_bandwidth: bytes per second to off-chip memory (HBM, GDDR, DRAM).
    mem_capacity: bytes of that memory, as built (before any ECC reservation).
    inline_ecc: True for GDDR parts whose ECC check bits take 1/16 of the memory.
    """

    name: str
    peak_flops: Mapping[str, float]
    mem_bandwidth: float
    mem_capacity: float
    source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)
    inline_ecc: bool = False

    def __post_init__(self) -> None:
        if not self.peak_flops:
            raise ValueError("peak_flops must name at least one dtype")
        canonical = {}
        for dtype, value in self.peak_flops.items():
            check_positive(f"peak_flops[{dtype!r}]", value)
            canonical[normalize_dtype(dtype)] = float(value)
        object.__setattr__(self, "peak_flops", MappingProxyType(canonical))
        check_positive("mem_bandwidth", self.mem_bandwidth)
        check_positive("mem_capacity", self.mem_capacity)

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The dtypes this part has a peak for."""
        return tuple(self.peak_flops)

    def peak(self, dtype: str = "fp16") -> float:
        """Dense peak FLOP/s in `dtype`; ValueError if the part has no such peak."""
        key = normalize_dtype(dtype)
        if key not in self.peak_flops:
            raise ValueError(
                f"dtype {dtype!r} has no peak on {self.name}; it supports {list(self.peak_flops)}"
            )
        return self.peak_flops[key]

    def usable_capacity(self, ecc: bool = True) -> float:
        """Bytes of memory left for data: mem_capacity less the inline-ECC share when ECC is on.

        A GDDR6 part with ECC on keeps 15/16 of its memory (an A10: 23,040 MiB of
        24,576 MiB); with ECC off, or on an HBM part, all of it.
        """
        if self.inline_ecc and ecc:
            return self.mem_capacity * (1 - INLINE_ECC_FRACTION)
        return self.mem_capacity

    def ridge_point(self, dtype: str = "fp16") -> float:
        """FLOP per byte where the roofline bends: peak FLOP/s divided by bandwidth in B/s.

        An operator whose arithmetic intensity is below this is memory bound here.
        """
        return self.peak(dtype) / self.mem_bandwidth


def _acc(name, flops_tera, bandwidth_gb_s, capacity_gib, source, aliases=(), notes="",
         inline_ecc=False):
    return Accelerator(
        name=name,
        peak_flops={k: v * TFLOP for k, v in flops_tera.items()},
        mem_bandwidth=bandwidth_gb_s * GB,
        mem_capacity=capacity_gib * GiB,
        source=source,
        notes=notes,
        aliases=tuple(aliases),
        inline_ecc=inline_ecc,
    )


_GDDR6_ECC = ("GDDR6 with inline ECC: with ECC on (the default) 1/16 of the memory holds "
              "check bits; see usable_capacity().")
_POWER_CAPPED = ("A low-profile card capped at {watts} W: under a long matmul it lowers its "
                 "clocks and rarely holds the datasheet peak, so measured FLOP/s fall short of it.")


# Dense peaks in TFLOP/s (TOP/s for int8), bandwidth in GB/s, capacity in GiB (the
# datasheets' "GB" of memory).
CATALOG: tuple[Accelerator, ...] = (
    # NVIDIA T4 datasheet: FP32 8.1 TFLOPS, mixed FP16/FP32 65 TFLOPS, INT8 130 TOPS,
    # 320 GB/s, 16 GB GDDR6 (no bf16 or tf32 on Turing).
    # 70 W maximum power (same datasheet).
    _acc("T4", {"fp32": 8.1, "fp16": 65, "int8": 130}, 320, 16,
         "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf",
         notes=_POWER_CAPPED.format(watts=70) + " " + _GDDR6_ECC
         + " nvidia-smi shows 15,360 MiB of 16,384.", inline_ecc=True),
    # NVIDIA L4 datasheet: FP32 30.3; TF32 120*, FP16/BF16 242*, FP8 485*, INT8 485*
    # (* with sparsity; dense is half); 300 GB/s; 24 GB GDDR6; 72 W maximum power.
    _acc("L4", {"fp32": 30.3, "tf32": 60, "fp16": 121, "bf16": 121, "fp8": 242.5, "int8": 242.5},
         300, 24, "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet",
         notes=_POWER_CAPPED.format(watts=72) + " " + _GDDR6_ECC, inline_ecc=True),
    # NVIDIA A10 datasheet: FP32 31.2; TF32 62.5; BF16/FP16 125; INT8 250 (dense);
    # 600 GB/s; 24 GB GDDR6. The lecture's running example.
    _acc("A10", {"fp32": 31.2, "tf32": 62.5, "fp16": 125, "bf16": 125, "int8": 250}, 600, 24,
         "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf",
         notes=_GDDR6_ECC + " nvidia-smi shows 23,028 MiB of 24,576 with ECC on.",
         inline_ecc=True),
    # A10G (AWS G5 instances) has no public NVIDIA datasheet; figures as tabulated by
    # Baseten: FP32 35, TF32 35, BF16/FP16 70, INT8 140 (dense); 600 GB/s; 24 GB.
    _acc("A10G", {"fp32": 35, "tf32": 35, "fp16": 70, "bf16": 70, "int8": 140}, 600, 24,
         "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/",
         notes=_GDDR6_ECC, inline_ecc=True),
    # NVIDIA A100 datasheet (SXM): FP32 19.5; TF32 156; BF16/FP16 312; INT8 624 (dense);
    # 40 GB HBM2 at 1,555 GB/s; 80 GB HBM2e at 2,039 GB/s. "A100" alone names both sizes
    # (and the PCIe boards beside them), so it is ambiguous and lookup asks for one.
    _acc("A100 SXM 40GB",
         {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312, "int8": 624}, 1555, 40,
         "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
         aliases=("A100", "A100 40GB", "A100-40G")),
    _acc("A100 SXM 80GB",
         {"fp32": 19.5, "tf32": 156, "fp16": 312, "bf16": 312, "int8": 624}, 2039, 80,
         "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
         aliases=("A100", "A100 80GB", "A100-80G")),
    # NVIDIA H100 datasheet, SXM: FP32 67; TF32 494.5; BF16/FP16 989.5; FP8/INT8 1,979
    # (dense, half the sparse figures printed); 3.35 TB/s; 80 GB HBM3. "H100" alone is
    # ambiguous between the SXM and PCIe entries.
    _acc("H100 SXM",
         {"fp32": 67, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5, "fp8": 1979, "int8": 1979},
         3350, 80, "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
         aliases=("H100",)),
    # Same datasheet, PCIe: FP32 51; TF32 378; BF16/FP16 756; FP8/INT8 1,513 (dense);
    # 2 TB/s; 80 GB HBM2e.
    _acc("H100 PCIe",
         {"fp32": 51, "tf32": 378, "fp16": 756, "bf16": 756, "fp8": 1513, "int8": 1513},
         2000, 80, "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
         aliases=("H100",)),
    # NVIDIA H200 datasheet (SXM): compute as H100 SXM; 4.8 TB/s; 141 GB HBM3e. The H200
    # NVL of the same datasheet has lower peaks; "H200" names the SXM part here.
    # The "141 GB" is binary like every other capacity: nvidia-smi on an H200 shows a
    # total of 143,771 MiB (140.4 GiB, 150.8e9 bytes), more than 141e9 bytes could hold,
    # and NVIDIA's MIG profile "4g.71gb" of this part holds 69.50 GiB
    # (https://github.com/NVIDIA/mig-parted/issues/120). 141 GiB is the closer reading.
    _acc("H200 SXM", {"fp32": 67, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5, "fp8": 1979,
                      "int8": 1979},
         4800, 141, "https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446",
         aliases=("H200",)),
    # NVIDIA L40S datasheet: FP32 91.6; TF32 183; BF16/FP16 362.05; FP8/INT8 733 (dense);
    # 864 GB/s; 48 GB GDDR6.
    _acc("L40S",
         {"fp32": 91.6, "tf32": 183, "fp16": 362.05, "bf16": 362.05, "fp8": 733, "int8": 733},
         864, 48, "https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413",
         notes=_GDDR6_ECC, inline_ecc=True),
    # NVIDIA Ada Lovelace architecture whitepaper, GeForce RTX 4090: FP32 82.6; TF32 82.6;
    # FP16/BF16 with FP32 accumulate 165.2; FP8 with FP32 accumulate 330.3; INT8 660.6
    # (dense); 1,008 GB/s; 24 GB GDDR6X.
    _acc("RTX 4090",
         {"fp32": 82.6, "tf32": 82.6, "fp16": 165.2, "bf16": 165.2, "fp8": 330.3, "int8": 660.6},
         1008, 24,
         "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf",
         aliases=("4090", "GeForce RTX 4090")),
    # AMD Instinct MI300X data sheet: FP32 matrix 163.4; TF32 653.7; FP16/BF16 1,307.4;
    # FP8/INT8 2,614.9 (dense); 5.3 TB/s; 192 GB HBM3.
    _acc("MI300X",
         {"fp32": 163.4, "tf32": 653.7, "fp16": 1307.4, "bf16": 1307.4, "fp8": 2614.9,
          "int8": 2614.9},
         5300, 192,
         "https://www.amd.com/content/dam/amd/en/documents/instinct-tech-docs/data-sheets/amd-instinct-mi300x-data-sheet.pdf"),
)

_INDEX = build_index((label, acc) for acc in CATALOG for label in (acc.name, *acc.aliases))


def list_accelerators() -> list[str]:
    """Names of the catalog accelerators, in catalog order."""
    return [acc.name for acc in CATALOG]


def get_accelerator(name: str | Accelerator) -> Accelerator:
    """Look up a catalog accelerator, ignoring case, spaces and punctuation.

    An Accelerator passes through unchanged, so functions can take either. A name
    that fits several parts ("A100", "H100") raises ValueError listing them.
    """
    if isinstance(name, Accelerator):
        return name
    return lookup("accelerator", name, _INDEX, list_accelerators())


@dataclass(frozen=True)
class Link:
    """A GPU's link to its peers, in SI units: the alpha-beta model's two constants.

    bandwidth: bytes per second per GPU, both directions together, as datasheets print
    it (NVLink 4: 900 GB/s = 450 GB/s each way). `one_way` is half of it: a ring sends
    and receives at once, so each transfer moves at the one-way rate.
    latency_s: alpha, the seconds one message costs before its first byte arrives,
    whatever its size (a ring step, a send).
    source: where the bandwidth comes from; latency_source: where the latency does (the
    same when empty).
    """

    name: str
    bandwidth: float
    latency_s: float
    source: str
    latency_source: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        check_positive("bandwidth", self.bandwidth)
        check_non_negative("latency_s", self.latency_s)
        if not self.latency_source:
            object.__setattr__(self, "latency_source", self.source)

    @property
    def one_way(self) -> float:
        """B/s in each direction: the B of the alpha-beta model."""
        return self.bandwidth / 2


_H100_DATASHEET = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_A100_DATASHEET = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                   "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
_A10_DATASHEET = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/"
                  "a10-datasheet.pdf")
# NCCL's own cost model (src/graph/tuning.cc, table hwLat, ring algorithm, LL protocol, the
# one NCCL picks for small messages) charges each ring step 0.6 us over NVLink, 1.0 us over
# PCIe and 2.7 us over the network, on top of a fixed 6.6 us per collective that the
# alpha-beta model here leaves out. These are NCCL's modelling assumptions, not
# measurements: measure your own with nccl-tests' all_reduce_perf at small sizes.
_NCCL_TUNING = ("https://github.com/NVIDIA/nccl/blob/b6475625fbcaa2c3c0e50eed2fa1255d7514d4a2"
                "/src/graph/tuning.cc")
_LATENCY_NOTE = ("latency_s is NCCL's modelled per-step latency (ring, LL protocol), an "
                 "assumption, not a measurement; NCCL adds a fixed ~6.6 us per collective.")

# Bandwidth in GB/s (both directions together, per GPU), latency in seconds.
LINKS: tuple[Link, ...] = (
    # NVIDIA H100 datasheet (SXM): NVLink 900 GB/s, both directions together. NCCL's
    # maintainers put the achievable rate at about 370 GB/s each way
    # (https://github.com/NVIDIA/nccl/issues/1442). Latency: NCCL's model, 0.6 us a step.
    Link("NVLink 4 (H100 SXM)", 900 * GB, 0.6e-6, _H100_DATASHEET, _NCCL_TUNING,
         notes=_LATENCY_NOTE, aliases=("NVLink 4", "NVLink4", "H100 NVLink")),
    # NVIDIA A100 datasheet (SXM): NVLink 600 GB/s, both directions together.
    # Latency: NCCL's model, 0.6 us a step (the same table entry for every NVLink).
    Link("NVLink 3 (A100 SXM)", 600 * GB, 0.6e-6, _A100_DATASHEET, _NCCL_TUNING,
         notes=_LATENCY_NOTE, aliases=("NVLink 3", "NVLink3", "A100 NVLink")),
    # NVIDIA H100 datasheet (PCIe): PCIe Gen5 128 GB/s, both directions (64 GB/s each way).
    # Latency: NCCL's model for PCIe, 1.0 us a step.
    Link("PCIe Gen5 x16", 128 * GB, 1.0e-6, _H100_DATASHEET, _NCCL_TUNING,
         notes=_LATENCY_NOTE, aliases=("PCIe 5", "PCIe 5.0", "PCIe Gen5")),
    # NVIDIA A10 datasheet: PCIe Gen4 64 GB/s, both directions (the A10 has no NVLink).
    # Latency: NCCL's model for PCIe, 1.0 us a step.
    Link("PCIe Gen4 x16", 64 * GB, 1.0e-6, _A10_DATASHEET, _NCCL_TUNING,
         notes=_LATENCY_NOTE, aliases=("PCIe 4", "PCIe 4.0", "PCIe Gen4")),
    # InfiniBand NDR: a 4x port carries 400 Gb/s = 50 GB/s each way, 100 GB/s both ways
    # (Linux mlx5 driver, "IB/mlx5: Add support for NDR link speed": 100, 200 and 400 Gb/s
    # are NDR at widths x1, x2 and x4). Per GPU where each GPU has a port of its own, as in
    # NVIDIA's DGX H100. Latency: NCCL's model for the network, 2.7 us a step (the adapter
    # alone takes under 1 us; the rest is PCIe, the switch and NCCL's proxy thread).
    Link("InfiniBand NDR (400 Gb/s)", 100 * GB, 2.7e-6,
         "https://github.com/torvalds/linux/commit/f946e45f59ef01ff54ffb3b1eba3a8e7915e7326",
         _NCCL_TUNING, notes=_LATENCY_NOTE, aliases=("NDR", "InfiniBand NDR", "IB NDR")),
    # InfiniBand HDR: ConnectX-6 ports of 200 Gb/s = 25 GB/s each way, 50 GB/s both ways,
    # at under 600 ns of adapter latency (NVIDIA ConnectX-6 user manual, introduction). Per
    # GPU where each GPU has a port of its own, as in NVIDIA's DGX A100. Latency: NCCL's
    # model for the network, 2.7 us a step.
    Link("InfiniBand HDR (200 Gb/s)", 50 * GB, 2.7e-6,
         "https://docs.nvidia.com/networking/display/ConnectX6EN/Introduction",
         _NCCL_TUNING, notes=_LATENCY_NOTE, aliases=("HDR", "InfiniBand HDR", "IB HDR")),
)

# Chapter 4's links: the four inside one server, in the table's order.
INTERCONNECTS: tuple[Link, ...] = LINKS[:4]

_LINK_INDEX = build_index((label, link) for link in LINKS for label in (link.name, *link.aliases))


def list_links() -> list[str]:
    """Names of the catalog links, in catalog order."""
    return [link.name for link in LINKS]


def get_link(name: str | Link) -> Link:
    """Look up a catalog link ("NVLink 4", "PCIe Gen4", "NDR", ...), ignoring case, spaces
    and punctuation; a Link passes through unchanged."""
    if isinstance(name, Link):
        return name
    return lookup("link", name, _LINK_INDEX, list_links())
