"""Was the machine busy while we measured? The other processes' share of the CPU, read around a run.

Timings on a shared machine are only as good as its quiet: torch's threads slow several-fold when
other jobs take the same cores. `watch_load()` reads the whole machine's busy CPU time and this
process's own before and after the block it wraps; the difference is what *other* processes
used, in cores on average. A measured cell wraps its measurement and prints `report.note()`,
which says whether the figures above were taken on a quiet machine:

    with watch_load() as load:
        timing = benchmark(step)
    print(load.note())      # "machine quiet: other processes used 0.02 of 2 cores"

Linux's /proc gives the exact figure. Elsewhere the one-minute load average is the only signal
(it counts this process too), and the note says so.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

BUSY_SHARE = 0.25  # other processes on more than a quarter of the cores: the timings are suspect


def _machine_busy_s() -> float | None:
    """Seconds of CPU time all processes have used since boot (None without /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_busy_s() -> float:
    """CPU seconds this process (all its threads) has used, with the children it waited for
    (a pool's workers, a sandbox's processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _descendants() -> dict[int, tuple[int, int]]:
    """This process's live descendants: pid -> (its own CPU ticks, ticks of the children it
    waited for). Empty without /proc."""
    stats = {}
    try:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return {}
    for name in names:
        try:
            with open(f"/proc/{name}/stat") as f:
                # after the command's closing parenthesis: state, ppid, ..., then utime,
                # stime, cutime and cstime at indices 11 to 14
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        stats[int(name)] = (int(rest[1]), int(rest[11]) + int(rest[12]),
                            int(rest[13]) + int(rest[14]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        found[pid] = stats[pid][1:]
        todo += children.get(pid, [])
    return found


def _descendants_busy_s(before: dict[int, tuple[int, int]]) -> float:
    """CPU seconds the block caused in descendants: all of those born since `before` (a
    `_descendants()` snapshot), and what those already alive reaped meanwhile (a fork
    server's workers, such as torch.distributed ranks); not the own time of processes that
    were already running, which were not started by the block."""
    ticks = 0
    for pid, (own, reaped) in _descendants().items():
        if pid in before:
            ticks += reaped - before[pid][1]
        else:
            ticks += own + reaped
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class LoadReport:
    """What the block used (`own_cores`) and what other processes used meanwhile
    (`other_cores`), in cores on average, of the machine's `cores`."""

    cores: int
    wall_s: float = 0.0
    own_cores: float = 0.0
    other_cores: float | None = None
    load_average: float | None = None

    @property
    def busy(self) -> bool:
        """True when other processes took more than BUSY_SHARE of the cores."""
        if self.other_cores is not None:
            return self.other_cores > BUSY_SHARE * self.cores
        return self.load_average is not None and self.load_average > self.cores

    def note(self) -> str:
        """One line for a cell's output: quiet or busy, and the figure that says so."""
        if self.other_cores is not None:
            used = f"other processes used {self.other_cores:.2f} of {self.cores} cores"
        elif self.load_average is not None:
            used = (f"one-minute load average {self.load_average:.2f} on {self.cores} cores "
                    "(this process included)")
        else:
            return "machine load unknown: compare timings only within one run"
        if self.busy:
            return (f"WARNING: machine busy while this ran ({used}): the timings above are slower "
                    "and noisier than this machine can do; re-run on a quiet machine")
        return f"machine quiet while this ran: {used}"


@contextmanager
def watch_load() -> Iterator[LoadReport]:
    """Measure what other processes use of the CPU while the `with` block runs."""
    report = LoadReport(cores=os.cpu_count() or 1)
    descendants = _descendants()
    start = (time.perf_counter(), _machine_busy_s(), _own_busy_s())
    try:
        yield report
    finally:
        wall = time.perf_counter() - start[0]
        machine = _machine_busy_s()
        own = _own_busy_s() + _descendants_busy_s(descendants)
        report.wall_s = wall
        report.own_cores = (own - start[2]) / wall if wall > 0 else 0.0
        if machine is not None and start[1] is not None and wall > 0:
            others = (machine - start[1]) - (own - start[2])
            report.other_cores = max(others, 0.0) / wall  # jiffy rounding can dip below 0
        elif hasattr(os, "getloadavg"):
            report.load_average = os.getloadavg()[0]
