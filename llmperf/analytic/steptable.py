"""The table `step_costs` returns: one row per operator, its totals, and its parts.

Split from `llmperf.analytic.layers`, which counts the rows; this module holds what a row
is and what a table of them answers. Each row says

- which block of the layer it belongs to (`block`: "attention", "ffn" or "other");
- what kind of FLOPs it does (`kind`): "matmul" (a product with a weight matrix),
  "attention" (scores, softmax and the weighted sum of values: the rows qk, softmax and
  sv under the standard algorithm, the one row "attention" under the fused one, so the
  two algorithms sum alike) or "elementwise" (norms, RoPE, residual adds, the FFN's
  nonlinearity, the embedding lookup);
- which data its bytes are (`weight_bytes`, `kv_bytes`, and the rest, the activations):
  weights are parameters read (a matrix, a norm's scale vector, the embedding rows a step
  gathers); KV bytes are the keys and values attention reads from the cache; activations
  are every other tensor read or written (inputs and outputs of each operator, the
  attention scores and probabilities, the new token's K and V as its projections write them).

`StepCosts.flops_by_kind()` and `StepCosts.bytes_by_data()` sum a step by these.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..hardware import Accelerator, get_accelerator
from ..table import Table
from ..units import check_non_negative, format_bytes, format_flops, format_seconds
from .cost import Cost
from .roofline import bound, roofline_time

ATTENTION, FFN, OTHER = "attention", "ffn", "other"
BLOCKS = (ATTENTION, FFN, OTHER)
MATMUL, ELEMENTWISE = "matmul", "elementwise"
KINDS = (MATMUL, ATTENTION, ELEMENTWISE)
WEIGHTS, KV, ACTIVATIONS = "weights", "kv", "activations"
DATA = (WEIGHTS, KV, ACTIVATIONS)

# The kind of every row name `step_costs` writes, for rows built without one.
ROW_KINDS = {
    **dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj", "router", "ffn_gate", "ffn_up",
                     "ffn_down", "lm_head"), MATMUL),
    **dict.fromkeys(("qk", "softmax", "sv", "attention"), ATTENTION),
    **dict.fromkeys(("embedding", "positions", "attn_norm", "rope", "attn_residual", "ffn_norm",
                     "activation", "ffn_residual", "final_norm"), ELEMENTWISE),
}


@dataclass(frozen=True)
class OpRow:
    """One operator of the step, summed over the `layers` times it runs.

    `kind` is the kind of its FLOPs (`KINDS`); left out, it is looked up by the row's name
    among `step_costs`' rows. `weight_bytes` and `kv_bytes` split its bytes by data, the
    rest being activations; a row built without them (None) has no split, and
    `activation_bytes` and `StepCosts.bytes_by_data` refuse it.
    """

    name: str
    block: str
    cost: Cost
    layers: int
    kind: str | None = field(default=None, kw_only=True)
    weight_bytes: float | None = field(default=None, kw_only=True)
    kv_bytes: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.kind is None:
            if self.name not in ROW_KINDS:
                raise ValueError(f"kind must be one of {KINDS} for a row named {self.name!r}, "
                                 "which is not one of step_costs' rows")
            object.__setattr__(self, "kind", ROW_KINDS[self.name])
        elif self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if (self.weight_bytes is None) != (self.kv_bytes is None):
            raise ValueError("weight_bytes and kv_bytes must be given together (or neither)")
        if self.weight_bytes is not None:
            check_non_negative("weight_bytes", self.weight_bytes)
            check_non_negative("kv_bytes", self.kv_bytes)
            if self.weight_bytes + self.kv_bytes > self.cost.bytes * (1 + 1e-12):
                raise ValueError(f"weight_bytes + kv_bytes ({self.weight_bytes + self.kv_bytes:g})"
                                 f" must not exceed the row's bytes ({self.cost.bytes:g})")

    @property
    def flops(self) -> float:
        return self.cost.flops

    @property
    def bytes(self) -> float:
        return self.cost.bytes

    @property
    def intensity(self) -> float:
        return self.cost.intensity

    @property
    def has_split(self) -> bool:
        """Whether the row's bytes are split into weights, KV and activations."""
        return self.weight_bytes is not None

    @property
    def activation_bytes(self) -> float:
        """Bytes that are neither weights nor KV cache: bytes - weight_bytes - kv_bytes."""
        if not self.has_split:
            raise ValueError(f"row {self.name!r} was built without weight_bytes and kv_bytes")
        return max(0.0, self.cost.bytes - self.weight_bytes - self.kv_bytes)

    def bytes_by_data(self) -> dict[str, float]:
        """{"weights": ..., "kv": ..., "activations": ...}, summing to `bytes`."""
        return {WEIGHTS: self.weight_bytes, KV: self.kv_bytes, ACTIVATIONS: self.activation_bytes}


@dataclass(frozen=True)
class PlacedOpRow(OpRow):
    """An operator placed on a roofline: its time at the bound that limits it there."""

    time_s: float
    bound: str


_COUNT_COLUMNS = ("operator", "block", "layers", "FLOP", "bytes", "FLOP/B")
_COUNT_FORMATS = {"FLOP": format_flops, "bytes": format_bytes, "FLOP/B": ".1f"}


@dataclass(frozen=True, repr=False)
class StepCosts:
    """What `step_costs` returns: one row per operator, and the totals of the step.

    Index it by operator name (`step["ffn_up"]`), iterate over its rows, sum a block
    with `block_total`, split it with `flops_by_kind` and `bytes_by_data`, and place it
    on a roofline with `on(accelerator)`.
    """

    model: str
    phase: str
    batch: int
    seq_len: int
    dtype: str
    kv_dtype: str
    attention: str
    rows: tuple[OpRow, ...]

    def __iter__(self) -> Iterator[OpRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> OpRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no operator {name!r}; rows are {[r.name for r in self.rows]}")

    @property
    def total(self) -> Cost:
        return sum((row.cost for row in self.rows), Cost(0.0, 0.0))

    def _block_rows(self, block: str) -> list[OpRow]:
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
        return [row for row in self.rows if row.block == block]

    def block_total(self, block: str) -> Cost:
        """Summed cost of the rows of one block: 'attention', 'ffn' or 'other'."""
        return sum((row.cost for row in self._block_rows(block)), Cost(0.0, 0.0))

    def flops_by_kind(self) -> dict[str, float]:
        """FLOPs of the step by kind: {"matmul": ..., "attention": ..., "elementwise": ...}.

        The same keys under either attention algorithm; the values sum to `total.flops`.
        """
        return {kind: sum(r.flops for r in self.rows if r.kind == kind) for kind in KINDS}

    def bytes_by_data(self) -> dict[str, float]:
        """Bytes of the step by data: {"weights": ..., "kv": ..., "activations": ...}.

        The values sum to `total.bytes`. ValueError if a row has no split (one built
        outside `step_costs` without weight_bytes and kv_bytes).
        """
        unsplit = [r.name for r in self.rows if not r.has_split]
        if unsplit:
            raise ValueError(f"rows {unsplit} were built without weight_bytes and kv_bytes: "
                             "their bytes cannot be split by data")
        return {data: sum(r.bytes_by_data()[data] for r in self.rows) for data in DATA}

    def on(self, accelerator: Accelerator | str) -> PlacedStepCosts:
        """This table on `accelerator`'s roofline at its dense peak in the table's dtype.

        Each row gets max(FLOPs / peak, bytes / bandwidth) and the bound that sets it;
        ValueError if the part has no peak in this dtype.
        """
        acc = get_accelerator(accelerator)
        acc.peak(self.dtype)  # fail early if the part has no peak in this dtype
        rows = tuple(PlacedOpRow(r.name, r.block, r.cost, r.layers,
                                 roofline_time(r.cost, acc, self.dtype),
                                 bound(r.cost, acc, self.dtype), kind=r.kind,
                                 weight_bytes=r.weight_bytes, kv_bytes=r.kv_bytes)
                     for r in self.rows)
        return PlacedStepCosts(self.model, self.phase, self.batch, self.seq_len, self.dtype,
                               self.kv_dtype, self.attention, rows, acc)

    # ---- display ----------------------------------------------------------------------------
    def _title(self) -> str:
        kv = f", KV cache {self.kv_dtype}" if self.kv_dtype != self.dtype else ""
        return (f"{self.model}, {self.phase}, batch {self.batch}, seq_len {self.seq_len}, "
                f"{self.dtype}{kv}, {self.attention} attention")

    def table(self) -> Table:
        """The rows and their total as a `Table` (plain text and HTML)."""
        t = self.total
        return Table(_COUNT_COLUMNS,
                     [(r.name, r.block, r.layers, r.flops, r.bytes, r.intensity) for r in self],
                     title=self._title(), formats=_COUNT_FORMATS,
                     footer=[("total", None, None, t.flops, t.bytes, t.intensity)])

    def to_text(self) -> str:
        """A fixed-width table, one line per operator and a total."""
        return self.table().to_text()

    __str__ = to_text
    __repr__ = to_text

    def _repr_html_(self) -> str:
        return self.table()._repr_html_()


@dataclass(frozen=True, repr=False)
class PlacedStepCosts(StepCosts):
    """A `StepCosts` placed on one accelerator's roofline: rows carry time_s and bound.

    `time_s` is the step time if the operators run one after another, each at its
    own roofline: an optimistic estimate, not a bound (see `llmperf.analytic.roofline`).
    """

    accelerator: Accelerator
    rows: tuple[PlacedOpRow, ...]

    def __getitem__(self, name: str) -> PlacedOpRow:
        return super().__getitem__(name)

    def __iter__(self) -> Iterator[PlacedOpRow]:
        return iter(self.rows)

    @property
    def time_s(self) -> float:
        """Seconds of the step: the sum of the rows' roofline times."""
        return sum(row.time_s for row in self.rows)

    def block_time_s(self, block: str) -> float:
        """Seconds of the rows of one block: 'attention', 'ffn' or 'other'."""
        return sum(row.time_s for row in self._block_rows(block))

    def _title(self) -> str:
        return f"{super()._title()}, on {self.accelerator.name}"

    def table(self) -> Table:
        t = self.total
        return Table((*_COUNT_COLUMNS, "bound", "time"),
                     [(r.name, r.block, r.layers, r.flops, r.bytes, r.intensity, r.bound, r.time_s)
                      for r in self],
                     title=self._title(), formats={**_COUNT_FORMATS, "time": format_seconds},
                     footer=[("total", None, None, t.flops, t.bytes, t.intensity, None,
                              self.time_s)])
