"""Weight-only quantization: int8 per output channel, int4 in groups, and a layer that uses them.

`quantize(w, bits, group_size)` keeps each row's (or group's) scale s = max|w| / q_max and
the codes q = round(w / s) (see `llmperf.analytic.quant` for the formulas and their sizes);
`.dequantize()` gives back s * q, within s / 2 of every weight. Both go through
`quantize_groups` / `dequantize_groups`, which the int8 KV cache (`llmperf.measured.cache`)
calls too: one rounding rule, and scale 0 for a group of zeros, everywhere.

`QuantizedLinear` computes x W^T with W held quantized, in one of two ways:
- "reference": dequantize W, then an ordinary matmul. Easy to read and always available, but
  it writes and reads a full-precision copy of W at every call: slower than not quantizing.
- "packed": PyTorch's weight-only kernels, which read the codes and scale them on the fly:
  `aten._weight_int8pack_mm` (int8, per channel) and `aten._weight_int4pack_mm_for_cpu`
  (int4 in groups of 32 to 256, codes packed by `_convert_weight_to_int4pack_for_cpu`) on the
  CPU, `aten._weight_int4pack_mm` on CUDA. They compute in bf16 (their fast path), so the
  layer casts x to bf16 and the result back. A packed layer is checked once against the
  reference when it is built; a shape or device no kernel takes stays "reference", and the
  layer's `fallback_reason` says why (`kernel_report` lists every layer's).

`quantize_model(model, bits, group_size)` swaps every nn.Linear of a reference
`Transformer` for a QuantizedLinear; the model's own code is unchanged. Quantize on the
device the model runs on: a packed layout belongs to its device's kernel.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..analytic.quant import check_bits, check_group_size, q_max

KERNELS = ("auto", "reference", "packed")
INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # the group sizes PyTorch's int4 kernels accept
_COMPUTE_DTYPE = torch.bfloat16
_INT4_CUDA_INNER_K_TILES = 8  # tinygemm's tiling: in_features must be a multiple of 8 * 16


@dataclass(frozen=True)
class QuantizedWeight:
    """A (rows, cols) weight as b-bit codes and one scale per group of a row.

    data: int8 codes (rows, cols) for 8 bits; for 4 bits, uint8 (rows, ceil(cols / 2)) with
    two codes per byte, each stored as q + 8 (low nibble first). scales: fp32
    (rows, cols / group_size). dtype: the dtype the weight had.
    """

    data: torch.Tensor
    scales: torch.Tensor
    bits: int
    group_size: int
    shape: tuple[int, int]
    dtype: torch.dtype

    def codes(self) -> torch.Tensor:
        """The integers q, int8 (rows, cols), in [-q_max, q_max]."""
        return self.data if self.bits == 8 else unpack_int4(self.data, self.shape[1])

    def dequantize(self) -> torch.Tensor:
        """s * q, in the weight's original dtype."""
        rows, cols = self.shape
        q = self.codes().reshape(rows, cols // self.group_size, self.group_size)
        return dequantize_groups(q, self.scales, self.dtype).reshape(rows, cols)

    @property
    def nbytes(self) -> int:
        """Bytes held: codes plus scales (`QuantScheme(bits, group, "fp32").matrix_bytes`)."""
        return self.data.nbytes + self.scales.nbytes

    @property
    def bytes_per_param(self) -> float:
        return self.nbytes / (self.shape[0] * self.shape[1])


def quantize_groups(x: torch.Tensor, bits: int = 8,
                    scale_dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric codes of every vector along x's last dimension (one group each): the scale
    s = max|x| / q_max stored in `scale_dtype`, codes round(x / s) clamped to [-q_max, q_max]
    (int8, x's shape); returns (codes, scales of shape x.shape[:-1]).

    The codes divide by the stored scale, so a scale rounded to fp16 is the one read back. A
    group of zeros (or one whose scale underflows `scale_dtype`) gets scale 0 and codes 0. The
    one quantizer of weights (`quantize`) and of the int8 KV cache; it looks at no value
    (no device wait): callers check their inputs.
    """
    top = q_max(bits)
    scales = (x.detach().abs().amax(dim=-1).float() / top).to(scale_dtype)
    s = scales.float()
    safe = torch.where(s > 0, s, torch.ones_like(s))
    codes = torch.round(x.float() / safe[..., None]).clamp(-top, top)
    return codes.to(torch.int8), scales


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor,
                      dtype: torch.dtype) -> torch.Tensor:
    """codes * scale, each scale over its vector of the last dimension, in `dtype`."""
    return (codes.float() * scales.float()[..., None]).to(dtype)


def quantize(w: torch.Tensor, bits: int = 8, group_size: int | None = None) -> QuantizedWeight:
    """Symmetric quantization of a 2-D weight (out_features, in_features), row by row.

    group_size None: one scale per output row (per channel); otherwise one per group_size
    consecutive weights of a row, which must divide in_features. A group of zeros gets
    scale 0 (its codes are 0).
    """
    check_bits(bits)
    check_group_size(group_size)
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"w must be a 2-D floating-point tensor, got "
                         f"{getattr(w, 'shape', type(w).__name__)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("w must hold finite values only (no NaN or infinity)")
    rows, cols = w.shape
    g = cols if group_size is None else int(group_size)
    if cols % g:
        raise ValueError(f"group_size must divide in_features = {cols}, got {g}")
    codes, scales = quantize_groups(w.reshape(rows, cols // g, g), bits)
    codes = codes.reshape(rows, cols)
    data = codes if bits == 8 else pack_int4(codes)
    return QuantizedWeight(data, scales, bits, g, (rows, cols), w.dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 7], (rows, cols) -> uint8 (rows, ceil(cols / 2)), q + 8 per nibble."""
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    if u.shape[1] % 2:
        u = F.pad(u, (0, 1), value=8)  # a code 0 fills the last byte
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(data: torch.Tensor, cols: int) -> torch.Tensor:
    """The inverse of `pack_int4`: int8 codes (rows, cols)."""
    nibbles = torch.stack([data & 15, data >> 4], dim=-1).reshape(data.shape[0], -1)
    return (nibbles[:, :cols].to(torch.int16) - 8).to(torch.int8)


def rms_error(w: torch.Tensor, quantized: QuantizedWeight) -> float:
    """Root mean square of w - dequantize(quantize(w)): the typical error per weight."""
    return float((w.float() - quantized.dequantize().float()).pow(2).mean().sqrt())


def predicted_rms_error(quantized: QuantizedWeight) -> float:
    """RMS error if each weight's rounding error were uniform on [-s/2, s/2]: s / sqrt(12),
    averaged over the weights (sqrt of the mean of s^2 / 12). Close for smooth
    distributions; an outlier's group, whose small weights round to 0, errs by less."""
    per_weight = quantized.scales.float().pow(2).mean()  # every group holds group_size weights
    return float((per_weight / 12).sqrt())


# each kernel, and the op that packs its weights (None: it reads the int8 codes as they are)
_PACKERS = {"_weight_int8pack_mm": None,
            "_weight_int4pack_mm_for_cpu": "_convert_weight_to_int4pack_for_cpu",
            "_weight_int4pack_mm": "_convert_weight_to_int4pack"}


def _kernel_for_shape(bits: int, group_size: int, rows: int, cols: int,
                      device: torch.device) -> tuple[str | None, str | None]:
    """(kernel, None) if a packed kernel takes this scheme and (rows, cols) on `device`,
    else (None, the requirement that failed)."""
    if device.type not in ("cpu", "cuda"):
        return None, f"no packed kernel runs on {device.type} (cpu and cuda only)"
    if bits == 8:
        if group_size != cols:  # int8 kernels take one scale per output row
            return None, f"the int8 kernel needs group_size None (per row), got {group_size}"
        if device.type == "cpu" and cols % 16:  # other widths crash the CPU kernel
            return None, f"in_features {cols} is not a multiple of 16 (CPU int8 kernel)"
        return "_weight_int8pack_mm", None
    if group_size not in INT4_KERNEL_GROUPS:
        return None, f"the int4 kernels need group_size in {INT4_KERNEL_GROUPS}, got {group_size}"
    if device.type == "cpu":
        if rows % 16:
            return None, f"out_features {rows} is not a multiple of 16 (CPU int4 kernel)"
        return "_weight_int4pack_mm_for_cpu", None
    if rows % 8:
        return None, f"out_features {rows} is not a multiple of 8 (CUDA int4 kernel)"
    if cols % (16 * _INT4_CUDA_INNER_K_TILES):
        return None, (f"in_features {cols} is not a multiple of "
                      f"{16 * _INT4_CUDA_INNER_K_TILES} (CUDA int4 kernel)")
    return "_weight_int4pack_mm", None


def kernel_for(bits: int, group_size: int, rows: int, cols: int,
               device: torch.device) -> tuple[str | None, str | None]:
    """(the PyTorch kernel that takes a (rows, cols) weight in this scheme here, None), or
    (None, why none does: the scheme, a shape requirement, the device, or a kernel missing
    from this build of PyTorch)."""
    op, why = _kernel_for_shape(bits, group_size, rows, cols, device)
    if op is None:
        return None, why
    missing = [n for n in (op, _PACKERS[op]) if n is not None and not hasattr(torch.ops.aten, n)]
    if missing:
        return None, f"torch {torch.__version__} has no aten.{missing[0]}"
    return op, None


def _pack(q: QuantizedWeight, op: str) -> dict[str, torch.Tensor]:
    """The tensors kernel `op` reads, made from the codes and scales."""
    if op == "_weight_int8pack_mm":
        return {"packed": q.data, "packed_scales": q.scales[:, 0].to(_COMPUTE_DTYPE)}
    # int4 kernels compute (code - 8) * scale + zero per group; a symmetric scheme has zero 0
    scale_zeros = torch.stack([q.scales.t(), torch.zeros_like(q.scales.t())], dim=-1)
    stored = q.codes().to(torch.int32) + 8
    if op == "_weight_int4pack_mm_for_cpu":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(stored, 1)
    else:  # the CUDA layout starts from two codes per byte, high nibble first
        pairs = (stored[:, 0::2] << 4 | stored[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(pairs, _INT4_CUDA_INNER_K_TILES)
    return {"packed": packed, "scale_zeros": scale_zeros.to(_COMPUTE_DTYPE).contiguous()}


class QuantizedLinear(nn.Module):
    """y = x W^T (+ bias) with W quantized; see the module docstring for the two kernels.

    in_features may be less than the quantized width: W was padded with zero columns to a
    whole number of groups, and x is padded with zeros to match.
    """

    def __init__(self, weight: QuantizedWeight, in_features: int,
                 bias: torch.Tensor | None = None, kernel: str = "auto") -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        self.out_features, width = weight.shape
        self.in_features, self.pad = int(in_features), width - int(in_features)
        self.bits, self.group_size, self.weight_dtype = weight.bits, weight.group_size, weight.dtype
        self.register_buffer("bias", bias)
        self.kernel, self.fallback_reason = "reference", None
        if kernel != "reference":
            self.fallback_reason = self._try_packed(weight)
        if kernel == "packed" and self.fallback_reason is not None:
            raise ValueError(f"kernel 'packed' cannot run int{weight.bits}, group "
                             f"{weight.group_size}, shape {weight.shape} here: "
                             f"{self.fallback_reason}; use kernel='auto' or 'reference'")
        if self.kernel == "reference":
            self.register_buffer("data", weight.data)
            self.register_buffer("scales", weight.scales)

    def _try_packed(self, weight: QuantizedWeight) -> str | None:
        """Hold the layout of the packed kernel for `weight` and return None, if one takes it
        and matches the reference on a random input; else hold nothing and return why not."""
        op, why = kernel_for(weight.bits, weight.group_size, *weight.shape, weight.data.device)
        if op is None:
            return why
        try:
            tensors = _pack(weight, op)
        except (RuntimeError, NotImplementedError) as e:
            return f"packing for {op} failed: {type(e).__name__}: {e}"
        for name, tensor in tensors.items():
            self.register_buffer(name, tensor)
        self.kernel = op
        why = self._differs_from_reference(weight)
        if why is not None:
            for name in tensors:
                delattr(self, name)
            self.kernel = "reference"
        return why

    def _differs_from_reference(self, weight: QuantizedWeight) -> str | None:
        """None if this layer's kernel gives the dequantized matmul on a random input (2 %
        of the output's largest magnitude: the kernels compute in bf16), else what went wrong."""
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, weight.shape[1], generator=gen).to(weight.data.device)
        reference = F.linear(x, weight.dequantize().float())
        try:
            got = self._matmul(x).float()
        except (RuntimeError, NotImplementedError) as e:
            return f"{self.kernel} raised {type(e).__name__}: {e}"
        tol = 2e-2 * float(reference.abs().max())
        if not torch.allclose(got, reference, rtol=2e-2, atol=tol):
            err = float((got - reference).abs().max())
            return f"{self.kernel} is off the reference result by up to {err:.3g} here"
        return None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, group_size: int | None = None,
                    kernel: str = "auto") -> QuantizedLinear:
        """Quantize an nn.Linear's weight (padded with zero columns to whole groups)."""
        w = linear.weight.detach()
        pad = 0 if group_size is None else (-w.shape[1]) % int(group_size)
        q = quantize(F.pad(w, (0, pad)) if pad else w, bits, group_size)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, linear.in_features, bias, kernel)

    def quantized_weight(self) -> QuantizedWeight:
        """The codes and scales of a reference layer."""
        if self.kernel != "reference":
            raise ValueError(f"a layer packed for {self.kernel} keeps only the kernel's layout")
        return QuantizedWeight(self.data, self.scales, self.bits, self.group_size,
                               (self.out_features, self.in_features + self.pad),
                               self.weight_dtype)

    def _matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, padded width) @ W^T by this layer's kernel."""
        if self.kernel == "reference":
            return F.linear(x, self.quantized_weight().dequantize().to(x.dtype))
        xc = x.to(_COMPUTE_DTYPE)
        if self.kernel == "_weight_int8pack_mm":
            return torch.ops.aten._weight_int8pack_mm(xc, self.packed, self.packed_scales)
        op = getattr(torch.ops.aten, self.kernel)
        return op(xc, self.packed, self.group_size, self.scale_zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (0, self.pad))
        y = self._matmul(x.reshape(-1, x.shape[-1])).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        why = "" if self.fallback_reason is None else f", fallback_reason={self.fallback_reason!r}"
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}, kernel={self.kernel}{why}")


def quantize_model(model: nn.Module, bits: int = 8, group_size: int | None = None,
                   kernel: str = "auto") -> nn.Module:
    """Replace every nn.Linear of `model` by a QuantizedLinear, in place; returns `model`.

    kernel "auto" gives each layer a packed kernel where one takes it and the reference path
    elsewhere; `kernel_report(model)` lists each layer's kernel and why it fell back."""
    check_bits(bits)
    check_group_size(group_size)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, QuantizedLinear.from_linear(child, bits, group_size, kernel))
    return model


def kernel_report(model: nn.Module) -> dict[str, tuple[str, str | None]]:
    """(kernel, fallback_reason) of every QuantizedLinear of `model`, by module name; the
    reason is None for a packed layer or one built with kernel "reference"."""
    return {name: (m.kernel, m.fallback_reason) for name, m in model.named_modules()
            if isinstance(m, QuantizedLinear)}


def kernels_used(model: nn.Module) -> dict[str, int]:
    """How many QuantizedLinear layers of `model` run on each kernel (`kernel_report`: which
    and why)."""
    return dict(Counter(m.kernel for m in model.modules() if isinstance(m, QuantizedLinear)))


def model_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model's state holds (parameters and persistent buffers),
    each counted once."""
    seen: dict[tuple[int, int], int] = {}
    for t in model.state_dict().values():
        seen[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.nbytes
    return sum(seen.values())
