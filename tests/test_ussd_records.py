"""One record per USSD dialog (store migration 12), purged after `retention: ussd` days;
steps counted per agency and outcome."""

import sqlite3

from store_fixtures import clock, db_path, ok, store  # noqa: F401 (fixtures)

from gateway import metrics
from gateway.model import UssdDialogRecord
from gateway.store.schema import MIGRATIONS


def record(id, ended_at):
    return UssdDialogRecord(id=id, agency="judiciary", operator="mci",
                            msisdn="989121234567", code="*4*0135#", started_at=ended_at - 30,
                            ended_at=ended_at, steps=4, end_reason="completed",
                            last_state="filed", tracking="1234567890")


def test_migration_12_is_the_dialogs_table():
    assert 12 in dict(MIGRATIONS)


def test_records_are_kept_and_purged_after_their_retention(store, clock, db_path):
    now = clock.seconds()
    ok(clock, store.record_ussd_dialog(record("old", now - 100 * 86400)))
    ok(clock, store.record_ussd_dialog(record("new", now - 1)))
    ok(clock, store.record_ussd_dialog(record("new", now - 1)))      # once per dialog
    removed = ok(clock, store.purge(older_than=now - 30 * 86400,
                                    ussd_before=now - 90 * 86400))
    assert removed["ussd"] == 1
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT id, end_reason, steps, tracking FROM ussd_dialogs").fetchall()
    assert rows == [("new", "completed", 4, "1234567890")]


def test_housekeeping_passes_the_ussd_retention():
    from twisted.internet import defer
    from twisted.internet.task import Clock
    from gateway.config.schema import Retention
    from gateway.housekeeping import housekeeping_service
    calls = []

    class Store:
        def expire_unreceipted(self, grace_s):
            return defer.succeed(0)

        def expire_unsent(self):
            return defer.succeed(0)

        def purge(self, older_than, **cutoffs):
            calls.append(cutoffs)
            return defer.succeed({})
    fake = Clock()
    fake.advance(1000 * 86400)
    housekeeping_service(Store(), fake, Retention(ussd=7)).startService()
    assert calls[0]["ussd_before"] == fake.seconds() - 7 * 86400


def test_steps_are_counted_per_agency_and_outcome(tmp_path):
    from twisted.internet.task import Clock
    from test_ussd_dialogs import MENU, menus, step
    from gateway.ussd.dialogs import UssdDialogs

    def count(agency, outcome):
        return metrics.USSD_STEPS.labels(agency, outcome)._value.get()
    before = (count("judiciary", "page"), count("judiciary", "invalid"),
              count("unknown", "unknown_code"))
    d = UssdDialogs(menus(tmp_path, MENU), clock=Clock())
    step(d, "new", "*4*0135#")
    step(d, "continue", "9")
    step(d, "new", "*4*0999#", key=("989120000001", None))
    after = (count("judiciary", "page"), count("judiciary", "invalid"),
             count("unknown", "unknown_code"))
    assert [b - a for a, b in zip(before, after)] == [1, 1, 1]
