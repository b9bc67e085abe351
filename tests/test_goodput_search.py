"""The goodput search shared by the single-instance, cluster and disaggregated simulators."""
import pytest

from llmperf.serving.goodput_search import highest_rate, max_goodput


class FakeRun:
    """A run whose requests all meet the SLOs up to 3.3 requests/s, none above."""

    def __init__(self, rate):
        self.rate = rate

    def slo_attainment(self, ttft_s, tpot_s):
        return 1.0 if self.rate <= 3.3 else 0.0


def test_bisection_finds_the_edge_within_the_tolerance():
    rate = max_goodput(FakeRun, ttft_s=1.0, tpot_s=0.1, tolerance_per_s=0.01)
    assert 3.29 <= rate <= 3.3
    assert highest_rate(lambda r: r <= 3.3, 100.0, 0.001) == pytest.approx(3.3, abs=0.001)


def test_no_rate_meets_gives_zero_and_too_low_a_ceiling_is_refused():
    assert highest_rate(lambda r: False, 10.0, 0.01) == 0.0
    with pytest.raises(ValueError, match="max_rate_per_s"):
        max_goodput(FakeRun, 1.0, 0.1, max_rate_per_s=2.0)


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(ttft_s=0), "ttft_s"), (dict(tpot_s=-1), "tpot_s"), (dict(attainment=1.5), "attainment"),
    (dict(max_rate_per_s=0), "max_rate_per_s"), (dict(tolerance_per_s=0), "tolerance_per_s"),
])
def test_bad_arguments_are_named(kwargs, name):
    args = {"ttft_s": 1.0, "tpot_s": 0.1, **kwargs}
    with pytest.raises(ValueError, match=name):
        max_goodput(FakeRun, **args)
