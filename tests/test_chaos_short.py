"""The chaos harness (bench/chaos.py) in short: each fault a couple of seconds against the
real daemon and simulator on loopback, with steady HTTP submissions and MO. Whatever the
fault, no accepted message is lost (it reached the SMSC or is still queued in the store)
and the copies the SMSC got twice stay within one window."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chaos  # noqa: E402

# (case, fault seconds, drain seconds, fault options)
SHORT = [
    ("drop", 2.0, 8.0, {}),
    # The throttled backlog drains slowly (the rate climbs back from its floor): what is
    # not out yet must still be queued.
    ("throttle", 2.0, 3.0, {}),
    # Answers held 1.5 s against a 1 s response timeout: one window's sends time out.
    ("stall", 1.5, 10.0, {}),
    ("down", 2.0, 8.0, {"down": 2.0}),
    ("sigkill", 3.0, 10.0, {"kills": 2}),
    ("sigkill_split", 3.0, 10.0, {"kills": 2}),
    # The store's tmpfs full for 2 s (root only: skipped where it cannot be mounted).
    ("disk_full", 2.0, 8.0, {}),
]


@pytest.mark.parametrize("case,duration,drain,options", SHORT, ids=[s[0] for s in SHORT])
def test_no_accepted_message_is_lost_under_fault(tmp_path, case, duration, drain, options):
    row = chaos.run_case(case, tmp_path, duration=duration, warmup=0.5, drain=drain,
                         rate=10.0, **options)
    if row.note.startswith("skipped"):
        pytest.skip(row.note)
    print(chaos.table([row]))
    assert row.accepted > 0, row
    if case in ("drop", "throttle", "sigkill", "sigkill_split", "disk_full"):
        assert row.note, f"the fault never happened: {row}"     # drops / throttled / kills
    assert row.lost == 0, (row, row.lost_texts)
    assert row.duplicated <= chaos.WINDOW, row
    assert row.arrived + row.still_queued == row.accepted, row
    assert row.mo_stored >= row.mo_sent, row
