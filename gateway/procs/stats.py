"""/metrics for every process of the split daemon, served by the supervisor.

The children write their metrics to files in the run directory (prometheus_client's
multiprocess mode: PROMETHEUS_MULTIPROC_DIR): counters and histograms are summed over
them, gauges carry a `pid` label.  Beside them, each process's CPU seconds and
resident memory, read from /proc, labelled by role (supervisor, dispatcher, http) and
index, so one scrape shows where the machine goes.
"""

import os

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_and_rss(pid):
    """(CPU seconds user+system, resident bytes) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            resident = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICKS, resident * PAGE


class ProcessStats:
    def __init__(self, processes):
        """processes() → [(role, index, pid)] of the live processes."""
        self.processes = processes

    def collect(self):
        cpu = CounterMetricFamily("payam_process_cpu_seconds",
                                  "CPU time (user + system) of each gateway process",
                                  labels=["role", "index"])
        rss = GaugeMetricFamily("payam_process_resident_bytes",
                                "Resident memory of each gateway process",
                                labels=["role", "index"])
        for role, index, pid in self.processes():
            found = cpu_and_rss(pid)
            if found is not None:
                cpu.add_metric([role, str(index)], found[0])
                rss.add_metric([role, str(index)], found[1])
        yield cpu
        yield rss


def registry(run_dir, processes):
    """The supervisor's registry: every child's metrics and every process's CPU/RSS."""
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=run_dir)
    reg.register(ProcessStats(processes))
    return reg


def forget_gauges(run_dir, pid):
    """A dead child's gauges go (its counters stay: totals never go back)."""
    for name in os.listdir(run_dir):
        if name.startswith("gauge_") and name.endswith(f"_{pid}.db"):
            try:
                os.remove(os.path.join(run_dir, name))
            except OSError:
                pass
