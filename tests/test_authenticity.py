"""Item 5: the 4040 authenticity check, from the normal form to the answer.

Pure parts first (normal form, fingerprints, candidates, Jalali dates, the hourly
allowance), then the store (fingerprints written with their messages, one indexed
lookup, purged by age), the accept path's platform sender, and the desk over a real
store and accept path. Through the daemon and the simulator: test_e2e_authenticity.py.
"""

import sqlite3
from datetime import date

import pytest
from store_contract import T0, new_message
from store_fixtures import clock, db_path, ok, open_store, store  # noqa: F401 (fixtures)
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from gateway.authenticity.candidates import candidate_texts
from gateway.authenticity.desk import AuthenticityDesk
from gateway.authenticity.jalali import persian_date, to_jalali
from gateway.authenticity.limiter import ALLOWED, SILENT, TELL, WINDOW_S, CheckLimiter
from gateway.config.schema import Agency
from gateway.config.shared import NAME_RE
from gateway.inbound.record import MobileOriginated
from gateway.model import HIGH
from gateway.outbound import errors, platform
from gateway.outbound.accept import Outbound
from gateway.outbound.submission import Submission
from gateway.policy.auth import hash_key
from gateway.policy.limits import AgencyLimits
from gateway.text.fingerprint import TextFingerprint
from gateway.text.normalise import normalise_for_check

KEY = b"k" * 32
SENT = "شهروند گرامی، مالیات ۱۴۰۵ شما ثبت شد.\u200cکد پیگیری ۱۲۳۴"


# -- the normal form ------------------------------------------------------------------

@pytest.mark.parametrize("variant", [
    SENT,
    "شهروند گرامي، ماليات 1405 شما ثبت شد.کد پيگيري 1234",        # Arabic yeh, ASCII digits
    "شهروند گرامی، مالیات ١٤٠٥ شما ثبت شد.\u200cكد پیگیری ١٢٣٤",   # Arabic-Indic, Arabic kaf
    "  شهروند   گرامی،\nمالیات ۱۴۰۵ شما ثبت شد.کد پیگیری ۱۲۳۴  ",  # spaces, a line break
    "شهروند گرامی، مالیات ۱۴۰۵ شما ثبت شد.کد پیگیری ۱۲۳۴.",         # no ZWNJ, a final stop
    "شهروند گرامی، مالیات ۱۴۰۵ شما ثبت شد.\u200cکد پیگیری ۱۲۳۴!!",
    "شهروند گرامـــی، مالیات ۱۴۰۵ شما ثبت شد.کد پیگیری ۱۲۳۴",        # kashida
    "ﺷﻬﺮﻭﻧﺪ گرامی، مالیات ۱۴۰۵ شما ثبت شد.کد پیگیری ۱۲۳۴",           # presentation forms
])
def test_what_phones_and_keyboards_change_does_not_change_the_fingerprint(variant):
    fingerprint = TextFingerprint(KEY)
    assert fingerprint.of(variant) == fingerprint.of(SENT)


@pytest.mark.parametrize("other", [
    "شهروند گرامی، مالیات ۱۴۰۶ شما ثبت شد.کد پیگیری ۱۲۳۴",          # a digit changed
    "شهروند گرامی، مالیات ۱۴۰۵ شما ثبت نشد.کد پیگیری ۱۲۳۴",         # a word changed
    "شهروند گرامی مالیات ۱۴۰۵ شما ثبت شد.کد پیگیری ۱۲۳۴",           # inner punctuation
])
def test_a_different_text_has_a_different_fingerprint(other):
    fingerprint = TextFingerprint(KEY)
    assert fingerprint.of(other) != fingerprint.of(SENT)


def test_the_fingerprint_depends_on_the_installations_key_and_is_128_bits():
    assert len(TextFingerprint(KEY).of(SENT)) == 16
    assert TextFingerprint(KEY).of(SENT) != TextFingerprint(b"j" * 32).of(SENT)
    assert normalise_for_check("  Your TAX is DUE!  ") == "your tax is due"
    with pytest.raises(ValueError):
        TextFingerprint(b"short")


def test_a_forwarded_copy_with_a_marker_header_or_signature_is_looked_up_as_the_original():
    original = normalise_for_check(SENT)
    for forwarded in (f"Fwd: {SENT}", f"بازارسال شده: {SENT}",
                      f"Forwarded message\n{SENT}\n-- علی", f"این درسته؟\n{SENT}",
                      f"{SENT}\nارسال از طرف مریم\nبا سلام"):
        assert original in candidate_texts(forwarded), forwarded
    many = "\n".join(f"line {n} of a long forwarded text" for n in range(500))
    assert len(candidate_texts(many)) <= 17
    assert candidate_texts(" .. \n !") == []


# -- Jalali dates --------------------------------------------------------------------

@pytest.mark.parametrize("day, jalali", [
    (date(2025, 3, 21), (1404, 1, 1)), (date(2024, 3, 20), (1403, 1, 1)),
    (date(2025, 3, 20), (1403, 12, 30)),            # 1403 is a leap year
    (date(2023, 3, 20), (1401, 12, 29)), (date(2026, 3, 21), (1405, 1, 1)),
    (date(2026, 12, 2), (1405, 9, 11)), (date(1979, 2, 11), (1357, 11, 22)),
    (date(2024, 9, 22), (1403, 7, 1)), (date(2024, 9, 21), (1403, 6, 31)),
])
def test_gregorian_days_become_jalali_days(day, jalali):
    assert to_jalali(day) == jalali


def test_the_persian_date_is_tehrans_day_in_persian_digits():
    # 2026-12-01 21:00 UTC is already 2 December (00:30) in Tehran.
    assert persian_date(1796158800) == "۱۱ آذر ۱۴۰۵"
    assert persian_date(1796158800 - 3600) == "۱۰ آذر ۱۴۰۵"


# -- the hourly allowance --------------------------------------------------------------

def test_over_the_hourly_allowance_a_citizen_is_told_once_then_silence():
    clock = Clock()
    limiter = CheckLimiter(3, clock)
    assert [limiter.take("c") for _ in range(6)] == [ALLOWED] * 3 + [TELL, SILENT, SILENT]
    assert limiter.take("other") == ALLOWED
    clock.advance(WINDOW_S)
    assert limiter.take("c") == ALLOWED


def test_the_allowance_tracks_a_bounded_number_of_citizens():
    clock = Clock()
    limiter = CheckLimiter(1, clock, max_tracked=100)
    for n in range(1000):
        limiter.take(f"c{n}")
    assert len(limiter._windows) <= 100
    assert limiter.take("c999") == TELL            # the newest are kept


# -- the store -------------------------------------------------------------------------

def fingerprinted(s, text=SENT, recipient="989121234567", created_at=T0, agency="tax",
                  **overrides):
    return new_message(s, text=text, recipient=recipient, created_at=created_at,
                       agency=agency, fingerprint=TextFingerprint(KEY).of(text), **overrides)


def test_the_fingerprint_row_is_what_the_check_needs_and_never_the_text(store, clock,
                                                                         db_path):
    # The interface's side (found, refused, purged) is tests/store_contract.py's.
    ok(clock, store.accept([fingerprinted(store), fingerprinted(store, recipient="989350000000",
                                                                created_at=T0 + 5),
                            new_message(store, recipient="989390000000")]))
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT recipient, agency, sent_at, length(digest)"
                          " FROM sent_fingerprints ORDER BY recipient").fetchall()
        columns = [c[1] for c in db.execute("PRAGMA table_info(sent_fingerprints)")]
    assert rows == [("989121234567", "tax", T0, 16), ("989350000000", "tax", T0 + 5, 16)]
    assert columns == ["digest", "recipient", "sent_at", "agency"]


def test_the_lookup_is_a_seek_of_the_primary_key(store, db_path):
    with sqlite3.connect(db_path) as db:
        for sql, args in (
                ("SELECT agency FROM sent_fingerprints WHERE digest IN (?, ?) AND recipient = ?"
                 " AND sent_at >= ? ORDER BY sent_at DESC LIMIT 1", (b"a", b"b", "x", 0)),
                ("SELECT agency FROM sent_fingerprints WHERE digest IN (?, ?) AND sent_at >= ?"
                 " LIMIT 1", (b"a", b"b", 0))):
            plan = " ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))
            assert "USING PRIMARY KEY (digest=?" in plan, plan


def test_the_fingerprint_key_is_made_once_per_store_and_kept(tmp_path, clock):
    from gateway.store import Store
    first = Store(tmp_path / "a.db", clock, commit_interval=0.0)
    first.open()
    key = first.fingerprint_key()
    clock.wait(first.close())
    again = Store(tmp_path / "a.db", clock, commit_interval=0.0)
    again.open()
    other = Store(tmp_path / "b.db", clock, commit_interval=0.0)
    other.open()
    try:
        assert len(key) == 32 and again.fingerprint_key() == key
        assert other.fingerprint_key() != key
    finally:
        clock.wait(again.close())
        clock.wait(other.close())


# -- the accept path and the desk ----------------------------------------------------------

TAX = Agency(id="tax", name="سازمان امور مالیاتی", keys=(hash_key("tax-key"),),
             numbers=("40401234",), masks=("MALIAT",), ussd_code=None, rate_per_s=1000,
             daily_parts=100_000, reply_webhook=None)


class Audit:
    def __init__(self):
        self.platform = []

    def platform_message(self, kind, recipient, message_id):
        self.platform.append((kind, recipient, message_id))

    def sender_refused(self, *args, owner=None):
        self.refused = args


def mo(citizen, text, source_key=None, partial=False):
    return MobileOriginated("mci", None, citizen, "4040", text, T0, partial=partial,
                            source_key=source_key)


class DeskTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-4040-")
        self.clock = Clock()
        self.clock.advance(reactor.seconds())
        self.audit = Audit()
        self.fingerprint = TextFingerprint(self.store.fingerprint_key())
        self.outbound = Outbound(self.store, AgencyLimits([TAX], self.store, self.clock),
                                 self.audit, clock=self.clock, agencies=lambda: [TAX],
                                 fingerprint=self.fingerprint)
        self.desk = AuthenticityDesk(self.store, self.outbound, self.fingerprint, self.clock,
                                     agencies=lambda: [TAX], checks_per_hour=3)

    def rows(self, sql):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute(sql).fetchall()

    def answers(self):
        return self.rows("SELECT recipient, text FROM messages WHERE agency = '@4040'"
                         " ORDER BY created_at, rowid")

    def send(self, text=SENT, to="09121234567"):
        return self.outbound.submit(TAX, Submission(
            sender="40401234", recipients=[to], text=text, priority=0, reference=None,
            idempotency_key=None, validity_s=3600, receipt=True))

    @defer.inlineCallbacks
    def test_a_text_sent_to_the_citizen_is_confirmed_with_the_agency_and_the_jalali_day(self):
        yield self.send()
        self.clock.advance(86400)
        yield self.desk.handle(mo("989121234567", "Fwd: " + SENT.replace("ی", "ي")))
        [(to, text)] = self.answers()
        self.assertEqual(to, "989121234567")
        self.assertIn("سازمان امور مالیاتی", text)
        self.assertIn(persian_date(self.clock.seconds() - 86400), text)
        self.assertIn("برای شما فرستاده است", text)
        [(agency, sender, priority, reference)] = self.rows(
            "SELECT agency, sender, priority, reference FROM messages WHERE agency = '@4040'")
        self.assertEqual((agency, sender, priority, reference),
                         (platform.PLATFORM_ID, "4040", HIGH, "authenticity"))
        [(kind, recipient, _id)] = self.audit.platform
        self.assertEqual((kind, recipient), ("authenticity", "989121234567"))
        # The answer is no agency's notice: forwarding it proves nothing.
        self.assertEqual(self.rows("SELECT COUNT(*) FROM sent_fingerprints"), [(1,)])
        self.assertEqual(self.rows("SELECT COUNT(*) FROM inbox"), [(0,)])

    @defer.inlineCallbacks
    def test_a_genuine_text_forwarded_by_someone_else_is_not_a_notice_to_them(self):
        yield self.send()
        yield self.desk.handle(mo("989350000000", SENT))
        [(to, text)] = self.answers()
        self.assertEqual(to, "989350000000")
        self.assertIn("اما نه برای شما", text)
        self.assertIn("سازمان امور مالیاتی", text)

    @defer.inlineCallbacks
    def test_an_invented_text_gets_the_warning_and_an_old_one_too(self):
        yield self.send()
        yield self.desk.handle(mo("989121234567", "سازمان امور مالیاتی: جریمه دارید، "
                                                  "روی پیوند بزنید"))
        self.clock.advance(31 * 86400)
        yield self.desk.handle(mo("989121234567", SENT))
        texts = [text for _, text in self.answers()]
        self.assertEqual(len(texts), 2)
        for text in texts:
            self.assertIn("هیچ دستگاه دولتی", text)
            self.assertIn("۳۰ روز", text)

    @defer.inlineCallbacks
    def test_over_the_allowance_one_polite_answer_then_silence(self):
        for n in range(6):
            yield self.desk.handle(mo("989121234567", f"متن شماره {n}"))
        texts = [text for _, text in self.answers()]
        self.assertEqual(len(texts), 4)
        self.assertIn("یک ساعت دیگر", texts[3])
        self.assertNotIn("یک ساعت دیگر", texts[2])

    @defer.inlineCallbacks
    def test_a_redelivered_mo_is_answered_once_and_an_unanswerable_source_not_at_all(self):
        yield self.desk.handle(mo("989121234567", "x y z", source_key="mci:1"))
        yield self.desk.handle(mo("989121234567", "x y z", source_key="mci:1"))
        yield self.desk.handle(mo("MyBank", "x y z"))
        self.assertEqual(len(self.answers()), 1)

    @defer.inlineCallbacks
    def test_a_text_that_came_with_parts_missing_is_asked_for_again_not_warned_about(self):
        # Parts of a long SMS lost on the way are no sign of a forgery: the citizen is
        # asked to forward it again, never told to report a genuine notice to the police.
        yield self.send()
        yield self.desk.handle(mo("989121234567", SENT[:20] + "…", partial=True))
        [(_, text)] = self.answers()
        self.assertIn("کامل نرسید", text)
        self.assertNotIn("هیچ دستگاه دولتی", text)

    @defer.inlineCallbacks
    def test_an_empty_text_is_told_how_to_check(self):
        yield self.desk.handle(mo("989121234567", " ? "))
        [(_, text)] = self.answers()
        self.assertIn("متن پیامک مشکوک", text)

    def test_no_agency_may_send_from_4040_and_the_platform_is_no_configured_agency(self):
        refusal = self.assertRaises(errors.SenderRefused, self.outbound.submit, TAX,
                                    Submission(sender="4040", recipients=["09121234567"],
                                               text="x", priority=0, reference=None,
                                               idempotency_key=None, validity_s=3600,
                                               receipt=True))
        self.assertEqual(refusal.reason, "number_not_assigned")
        self.assertIsNone(NAME_RE.match(platform.PLATFORM_ID))

    @defer.inlineCallbacks
    def test_a_store_that_cannot_take_the_answer_fails_the_check(self):
        from store_fixtures import FailingAccepts
        outbound = Outbound(FailingAccepts(self.store), None, self.audit, clock=self.clock)
        desk = AuthenticityDesk(self.store, outbound, self.fingerprint, self.clock)
        with self.assertRaises(errors.Overloaded):
            yield desk.handle(mo("989121234567", SENT))
        self.assertEqual(outbound.pending, 0)


def test_housekeeping_purges_fingerprints_after_the_checks_retention(store, clock, db_path):
    from gateway.housekeeping import housekeeping_service
    now = clock.seconds()
    ok(clock, store.accept([fingerprinted(store, created_at=now - 3 * 86400),
                            fingerprinted(store, created_at=now - 86400)]))
    service = housekeeping_service(store, clock, fingerprint_days=2)
    service.startService()
    try:
        clock.wait(store.purge(older_than=0))      # queued after the round's purge
        with sqlite3.connect(db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM sent_fingerprints").fetchone()[0] == 1
    finally:
        service.stopService()


# -- the inbound entry, and the configuration ----------------------------------------------

def test_the_authenticity_settings_are_read_and_checked(tmp_path):
    from test_config import GATEWAY, make_config
    from gateway.config import ConfigErrors, load_gateway_config
    from gateway.config.schema import Authenticity

    assert load_gateway_config(make_config(tmp_path)).authenticity == Authenticity(30.0, 10)
    config = load_gateway_config(make_config(
        tmp_path, GATEWAY + "authenticity: {retention_days: 7, checks_per_hour: 3}\n"))
    assert config.authenticity == Authenticity(7, 3)
    for bad, fragment in (("{retention_days: 0}", "authenticity.retention_days"),
                          ("{checks_per_hour: 0}", "authenticity.checks_per_hour"),
                          ("{check_per_hour: 5}", "check_per_hour")):
        with pytest.raises(ConfigErrors) as caught:
            load_gateway_config(make_config(tmp_path, GATEWAY + f"authenticity: {bad}\n"))
        [error] = caught.value.errors
        assert error.line == 15 and fragment in error.message, error
