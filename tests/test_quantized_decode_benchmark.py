"""benchmarks/quantized_decode.py reports the library's predicted speedup, not its own.

Its variants are built on ref-tiny (torchao left out); no step is timed. Checked by hand:
fp32 is the baseline (1x) and bf16 halves every byte a step moves (exactly 2x); fp32 scales
(the reference path) cost more bytes than bf16 ones, so predict less; int4 predicts more
than int8. And each row carries `predicted_decode_speedup` of its scheme and dtype.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from llmperf.analytic.quant import predicted_decode_speedup  # noqa: E402
from llmperf.measured.model import Transformer  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its neighbour _common
    try:
        spec = importlib.util.spec_from_file_location("quantized_decode",
                                                      BENCHMARKS / "quantized_decode.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_the_benchmark_reports_the_librarys_prediction(bench, monkeypatch):
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "torchao_int8", lambda model: (None, "left out in tests"))
    model = Transformer("ref-tiny", max_seq_len=bench.CONTEXT + 1, seed=0).eval()
    rows, note = bench.variants(model, model.config)
    got = {r["name"]: r["predicted_speedup"] for r in rows}
    assert note == "left out in tests"
    assert got["fp32"] == 1.0 and got["bf16"] == pytest.approx(2.0, rel=1e-12)
    assert 1.0 < got["int8, reference path"] < got["int8 per channel"] < 4.0
    assert got["int8 per channel"] < got["int4 group 128"] < 8.0
    for r in rows:
        assert r["predicted_speedup"] == predicted_decode_speedup(
            model.config, r["scheme"], bench.CONTEXT, r["dtype"])
