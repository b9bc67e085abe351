"""watch_load: what other processes used of the CPU while a block ran."""
import subprocess
import sys
import time

import pytest

import llmperf.measured.load as load


def fake_clocks(monkeypatch, machine, own, wall):
    """Make the block see these (start, end) readings of the three clocks."""
    monkeypatch.setattr(load, "_machine_busy_s", iter(machine).__next__)
    monkeypatch.setattr(load, "_own_busy_s", iter(own).__next__)
    monkeypatch.setattr(load.time, "perf_counter", iter(wall).__next__)
    monkeypatch.setattr(load.os, "cpu_count", lambda: 2)


def test_other_processes_share_is_machine_time_less_our_own(monkeypatch):
    # 2 s of wall time; the machine used 3 CPU-seconds, 1 of them ours: others used 1 core.
    fake_clocks(monkeypatch, machine=(100.0, 103.0), own=(10.0, 11.0), wall=(0.0, 2.0))
    with load.watch_load() as report:
        pass
    assert report.other_cores == pytest.approx(1.0)
    assert report.own_cores == pytest.approx(0.5)
    assert report.busy and report.note().startswith("WARNING: machine busy")
    assert "1.00 of 2 cores" in report.note()


def test_a_quiet_block_says_so(monkeypatch):
    fake_clocks(monkeypatch, machine=(100.0, 101.1), own=(10.0, 11.0), wall=(0.0, 2.0))
    with load.watch_load() as report:
        pass
    assert report.other_cores == pytest.approx(0.05)
    assert not report.busy and report.note().startswith("machine quiet")


def test_without_proc_stat_the_load_average_is_the_signal(monkeypatch):
    fake_clocks(monkeypatch, machine=(None, None), own=(10.0, 11.0), wall=(0.0, 2.0))
    monkeypatch.setattr(load.os, "getloadavg", lambda: (3.5, 1.0, 1.0))
    with load.watch_load() as report:
        pass
    assert report.other_cores is None and report.busy
    assert "load average 3.50 on 2 cores (this process included)" in report.note()


def test_a_process_spinning_beside_the_block_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        with load.watch_load() as report:
            time.sleep(1.0)  # this process is idle: what the machine used is the spinner's
    finally:
        spinner.kill()
        spinner.wait()
    assert report.other_cores is not None and report.other_cores > 0.7


SERVER = """
import subprocess, sys
sys.stdin.readline()
spin = "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass"
subprocess.run([sys.executable, "-c", spin])
print("done", flush=True)
sys.stdin.readline()
"""


def test_work_a_fork_server_started_earlier_runs_for_the_block_counts_as_the_blocks_own():
    # A child started before the block (like torch.distributed's fork server) runs a
    # grandchild for the block, which spins 1 CPU second and is reaped by the child: that
    # second is the block's own work, not another program's.
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)  # the server is up and waiting
        with load.watch_load() as report:
            server.stdin.write("go\n")
            server.stdin.flush()
            assert server.stdout.readline().strip() == "done"
    finally:
        server.kill()
        server.wait()
    assert report.own_cores * report.wall_s > 0.8  # the grandchild's second, counted as own
