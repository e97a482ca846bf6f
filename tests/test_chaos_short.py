"""The chaos harness (bench/chaos.py) in short: each fault a couple of seconds against the
real daemon and simulator on loopback, with steady HTTP submissions, MO and USSD
sessions. Whatever the fault, no accepted message is lost (it reached the SMSC or is
still queued in the store), no part reaches the SMSC more than max_unknown_outcomes
times, the copies stay within one window per bind, no USSD session is answered twice or filed for
another citizen, and the sessions started after the drain complete. And the harness
itself fails (exit 1) on a setup that does lose accepted messages."""

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import chaos  # noqa: E402
from gateway.national_id import is_national_id  # noqa: E402

# (case, fault seconds, drain seconds, fault options)
SHORT = [
    ("drop", 2.0, 8.0, {}),
    # The throttled backlog drains slowly (the rate climbs back from its floor): what is
    # not out yet must still be queued.
    ("throttle", 2.0, 3.0, {}),
    # Answers held 1.5 s against a 1 s response timeout: one window's sends time out.
    ("stall", 1.5, 10.0, {}),
    # Every 5th accepted submit_sm answered malformed: ~5 of them in 2 s at 10/s plus
    # the USSD pages, the first a lying command_length (the session closes).
    ("malformed", 2.0, 10.0, {}),
    ("down", 2.0, 8.0, {"down": 2.0}),
    ("sigkill", 3.0, 10.0, {"kills": 2}),
    # Split, one kill: the processes' starts are what costs time here.
    ("sigkill_split", 2.0, 10.0, {"kills": 1}),
    # The store's tmpfs full for 2 s (root only: skipped where it cannot be mounted).
    ("disk_full", 2.0, 8.0, {}),
    # The reply webhook's receiver gone 2 s: the pushes it missed are retried 5 s later.
    ("webhook_down", 2.0, 15.0, {"webhook_down": 2.0}),
]
OPERATORS = 3                   # daemon_harness.write_config's: one bind each


@pytest.mark.parametrize("case,duration,drain,options", SHORT, ids=[s[0] for s in SHORT])
def test_no_accepted_message_is_lost_under_fault(tmp_path, case, duration, drain, options):
    row = chaos.run_case(case, tmp_path, duration=duration, warmup=0.5, drain=drain,
                         rate=10.0, **options)
    if row.note.startswith("skipped"):
        pytest.skip(row.note)
    print(chaos.table([row]))
    assert row.accepted > 0, row
    if case in ("drop", "throttle", "malformed", "sigkill", "sigkill_split", "disk_full"):
        assert row.note, f"the fault never happened: {row}"     # drops / throttled / kills
    assert row.lost == 0, (row, row.lost_texts)
    assert row.max_copies <= chaos.MAX_UNKNOWN_OUTCOMES, row
    # All copies together: at most what was in flight when the fault struck, one window
    # per operator's bind (the late copies counted too: the harness waits for the store
    # to settle, not only for every text to arrive once).
    assert row.duplicated <= chaos.WINDOW * OPERATORS, row
    assert row.arrived + row.still_queued == row.accepted, row
    assert row.mo_stored >= row.mo_sent, row
    # USSD: sessions ran through the fault, none went wrong, and once it was over the
    # service answered again (the probes).
    assert row.ussd_started > 0, row
    assert row.ussd_wrong == 0, row.ussd_problems
    assert row.ussd_after == f"{chaos.USSD_PROBES}/{chaos.USSD_PROBES}", row.ussd_problems
    assert row.failures() == [], row
    if case == "webhook_down":
        assert row.mo_stored > 0 and row.webhooks == row.mo_stored, row
    if case == "malformed":
        assert "malformed=" in row.note, row
        # The lying length cost the session, and it was bound again.
        assert row.binds > OPERATORS, row


# --- the harness catches a gateway that loses messages ------------------------------------

def fault_store_lost(run, duration, **_):
    """A deliberately broken deployment: the store's directory on storage that does not
    survive a restart (the whole directory: a store missing beside its id marker the
    daemon refuses to start on). Messages accepted while the SMSC is away wait in the
    store; the daemon is killed and comes back on an empty store."""
    run.stop_sim()
    time.sleep(duration)
    run.kill_daemon()
    shutil.rmtree(Path(run.db_path).parent)
    run.start_sim()
    run.daemon.start()


def test_the_harness_exits_1_when_accepted_messages_are_lost(monkeypatch, capsys):
    monkeypatch.setitem(chaos.CASES, "store_lost", (fault_store_lost, {}))
    code = chaos.main(["--case", "store_lost", "--duration", "1", "--rate", "10",
                       "--drain", "3"])
    out, err = capsys.readouterr()
    print(out, err)
    assert code == 1
    row = out.splitlines()[2].split(" | ")
    lost = int(row[chaos.COLUMNS.index("lost")])
    assert lost > 0, out
    assert "FAILED store_lost" in err and "lost" in err


def test_the_accounting_flags_copies_over_the_bound_and_wrong_ussd_sessions():
    accepted = {"m1": "chaos x 000001", "m2": "chaos x 000002", "m3": "chaos x 000003"}
    at_smsc = ["chaos x 000001"] * (chaos.MAX_UNKNOWN_OUTCOMES + 1) + ["chaos x 000002"]
    row = chaos.account(chaos.Row("x"), accepted, at_smsc,
                        {"m1": "delivered", "m2": "submitted", "m3": "queued"})
    assert (row.arrived, row.lost, row.still_queued) == (2, 0, 1)
    assert (row.duplicated, row.max_copies) == (chaos.MAX_UNKNOWN_OUTCOMES,
                                                chaos.MAX_UNKNOWN_OUTCOMES + 1)
    assert any("reached the SMSC" in reason for reason in row.failures())

    row = chaos.account(chaos.Row("x"), accepted, at_smsc[-1:], {"m3": "failed"})
    assert (row.lost, row.failures()[0].split()[0]) == (2, "2")

    good, other = (chaos.UssdSession(n, f"98936{n:07d}", chaos.national_id(n),
                                     steps=4, answers=4, tracking=f"{n:010d}")
                   for n in (1, 2))
    filing = '{"tracking": "%s", "values": {"national_id": "%s"}}'
    filings = [("989360000001", filing % (good.tracking, good.national_id)),
               # the second citizen's filing under the first one's number
               ("989360000001", filing % (other.tracking, other.national_id))]
    row = chaos.account_ussd(chaos.Row("x"), [good, other], {good.msisdn: 1}, filings)
    assert (row.ussd_started, row.ussd_done, row.ussd_broken) == (2, 2, 0)
    assert row.ussd_wrong == 2, row.ussd_problems      # answered twice; miscredited
    assert row.failures() and "USSD" in row.failures()[0]
    clean = chaos.account_ussd(chaos.Row("x"), [good], {}, filings[:1])
    assert (clean.ussd_wrong, clean.failures()) == (0, [])


def test_the_webhook_is_down_a_full_minute_and_the_drain_outlasts_its_retries():
    args = chaos.build_parser().parse_args([])
    assert args.webhook_down == 60.0
    # Retries back off x2 from 5 s: the first after the outage comes within ~D + 5 s of
    # its end, and the pusher looks every 5 s.
    assert chaos.MIN_DRAIN["webhook_down"](vars(args)) >= args.webhook_down + 10


def test_national_ids_of_the_sessions_are_valid_and_distinct():
    ids = {chaos.national_id(n) for n in range(1, 5000)}
    assert len(ids) == 4999
    assert all(is_national_id(nid) for nid in ids)

