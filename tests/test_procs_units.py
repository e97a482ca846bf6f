"""The split daemon's small parts: the wake-up pipe, the binds' state file, the
per-process CPU/RSS reading, the workers setting (the processes themselves:
tests/test_e2e_procs.py)."""

import os
import time

from twisted.internet.task import Clock

from gateway.procs import stats
from gateway.procs.health import STALE_AFTER_S, HealthReader, HealthWriter
from gateway.procs.wake import WakeReader, WakeSender


def test_accepts_within_one_reactor_turn_write_one_byte_and_the_reader_wakes():
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        clock = Clock()
        sender = WakeSender(write_end, clock)
        for _ in range(100):
            sender.wake({"mci"})
        clock.advance(0)
        woken, fed = [], []
        reader = WakeReader(read_end, lambda: woken.append(1), lambda: fed.append(1))
        reader.doRead()
        assert (woken, fed) == ([1], [])
        sender.wake()
        sender.broadcast_opened()
        clock.advance(0)
        reader.doRead()
        assert (woken, fed) == ([1, 1], [1])
        reader.doRead()                      # nothing there: no wake
        assert woken == [1, 1]
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_full_pipe_loses_the_byte_not_the_worker():
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        while True:                          # fill it
            try:
                os.write(write_end, b"x" * 65536)
            except BlockingIOError:
                break
        clock = Clock()
        sender = WakeSender(write_end, clock)
        sender.wake()
        clock.advance(0)                     # no exception: the dispatcher polls anyway
    finally:
        os.close(read_end)
        os.close(write_end)


def test_workers_read_the_binds_state_the_dispatcher_writes(tmp_path):
    reader = HealthReader(str(tmp_path), {"mci": 2})
    assert reader() == {"mci": {"bound": 0, "binds": 2}}       # nothing yet: unbound
    state = {"mci": {"bound": 1, "binds": 2}}
    writer = HealthWriter(str(tmp_path), lambda: state, Clock())
    writer.write()
    assert reader() == state
    state = {"mci": {"bound": 2, "binds": 2}}
    writer.write()
    later = time.time_ns() + 10**6
    os.utime(writer.path, ns=(later, later))     # (mtime resolution: make it differ)
    assert reader() == state


def test_a_binds_state_not_renewed_lately_reads_as_unbound(tmp_path):
    """A hung dispatcher's last word must not keep /healthz saying all is well."""
    now = [time.time()]
    reader = HealthReader(str(tmp_path), {"mci": 2}, wall_clock=lambda: now[0])
    state = {"mci": {"bound": 2, "binds": 2}}
    writer = HealthWriter(str(tmp_path), lambda: state, Clock())
    writer.write()
    assert reader() == state
    now[0] += STALE_AFTER_S + 1
    assert reader() == {"mci": {"bound": 0, "binds": 2}}
    writer.write()                           # unchanged: touched, so current again
    now[0] = time.time()
    assert reader() == state
    os.utime(writer.path, (now[0] - STALE_AFTER_S - 1,) * 2)
    assert reader() == {"mci": {"bound": 0, "binds": 2}}


def test_cpu_and_rss_of_a_live_process_and_none_of_a_gone_one():
    cpu, rss = stats.cpu_and_rss(os.getpid())
    assert cpu > 0 and rss > 10 * 2**20
    assert stats.cpu_and_rss(2**22 + 12345) is None
