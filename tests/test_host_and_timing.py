"""`benchmark` waits for the accelerators before and after every sample; `measure_host` says
in its notes which figures it had to guess."""
import torch

import llmperf.measured.host as host
import llmperf.measured.timing as timing


def test_benchmark_waits_for_every_started_accelerator_around_each_sample(monkeypatch):
    events = []
    monkeypatch.setattr(timing, "started_accelerators", lambda: ["cuda:0", "cuda:1"])
    monkeypatch.setattr(timing, "synchronize", lambda dev: events.append(f"sync {dev}"))
    timing.benchmark(lambda: events.append("call"), warmup=1, repeat=2)
    around = ["sync cuda:0", "sync cuda:1", "call", "sync cuda:0", "sync cuda:1"]
    assert events == ["call"] + around + around


def test_benchmark_waits_only_for_the_named_device(monkeypatch):
    events = []
    monkeypatch.setattr(timing, "started_accelerators", lambda: ["cuda:0", "cuda:1"])
    monkeypatch.setattr(timing, "synchronize", lambda dev: events.append(dev))
    timing.benchmark(lambda: None, warmup=0, repeat=1, device="cuda:1")
    assert events == ["cuda:1", "cuda:1"]


def test_on_a_cpu_only_process_no_accelerator_is_started():
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert timing.started_accelerators() == []


def test_measure_host_notes_each_figure_it_guessed(monkeypatch):
    monkeypatch.setattr(host.os.path, "isdir", lambda path: False)

    def no_sysconf(name):
        raise ValueError(name)

    monkeypatch.setattr(host.os, "sysconf", no_sysconf)
    acc = host.measure_host(dtypes=("fp32",), quick=True)
    assert acc.mem_capacity == host.MEMORY_GUESS
    assert "last-level cache unreadable" in acc.notes
    assert "memory size unreadable" in acc.notes


def test_measure_host_notes_no_guess_when_the_machine_says(monkeypatch):
    monkeypatch.setattr(host, "_last_level_cache_bytes", lambda: (8 * 2**20, None))
    monkeypatch.setattr(host, "_memory_capacity", lambda dev: (64e9, None))
    acc = host.measure_host(dtypes=("fp32",), quick=True)
    assert acc.mem_capacity == 64e9 and "unreadable" not in acc.notes


def test_median_host_takes_each_figures_median_over_the_runs():
    import pytest

    from llmperf import Accelerator

    runs = [Accelerator(f"run {i}", {"fp32": f, **({"bf16": 2 * f} if i else {})}, bw, 64e9)
            for i, (f, bw) in enumerate([(1e12, 30e9), (3e12, 10e9), (2e12, 20e9)])]
    median = host.median_host(runs)
    assert median.peak("fp32") == 2e12 and median.mem_bandwidth == 20e9
    assert median.dtypes == ("fp32",)  # bf16 was not measured in every run
    assert median.notes.endswith("median of 3 runs")
    with pytest.raises(ValueError, match="runs"):
        host.median_host([])
