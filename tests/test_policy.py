"""Policy: API keys, sender rules, rate and quota limits, audit records.

Time comes from a Clock; the store is the real SQLite store on tmp_path, driven the way
tests/test_store.py drives it (writer-thread callbacks run while the test waits).
"""

import hashlib
import json
import logging
import sqlite3

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from threaded_clock import T0, ThreadedClock

from gateway.config.schema import Agency
from gateway.policy.audit import AuditLog
from gateway.policy import auth
from gateway.policy.auth import KeyRing, Unauthorized, generate_key, hash_key
from gateway.policy.auth_throttle import FailedAuthThrottle
from gateway.policy.limits import (
    AgencyLimits, QuotaExceeded, QuotaUnknown, RateLimited, start_of_tehran_day,
    tehran_day)
from gateway.policy.senders import SenderNotAllowed, check_sender, owner_of
from gateway.store import NewMessage, Store

# 2023-11-14 22:13:20 UTC = 2023-11-15 01:43:20 in Tehran


def agency(id_, key, numbers=(), masks=(), rate=10.0, daily=1000):
    return Agency(id=id_, name=id_, keys=(hash_key(key),), numbers=tuple(numbers),
                  masks=tuple(masks), ussd_code=None, rate_per_s=rate, daily_parts=daily,
                  reply_webhook=None)


TAX = agency("tax", "tax-secret-key", ["40401234"], ["MALIAT"])
JUDICIARY = agency("judiciary", "judiciary-secret-key", ["40400135"], ["ADLIRAN"])


@pytest.fixture
def clock():
    return ThreadedClock()


@pytest.fixture
def store(tmp_path, clock):
    s = Store(tmp_path / "gateway.db", reactor=clock)
    s.open()
    yield s
    clock.wait(s.close())


# -- auth ------------------------------------------------------------------------------

def test_generated_key_is_random_url_safe_and_its_hash_authenticates():
    key, hashed = generate_key()
    other, _ = generate_key()
    assert key != other
    assert len(key) >= 22 and all(c.isalnum() or c in "-_" for c in key)   # >= 128 bits
    assert hashed == "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    ring = KeyRing([Agency(id="new", name="n", keys=(hashed,), numbers=(), masks=(),
                           ussd_code=None, rate_per_s=1, daily_parts=1, reply_webhook=None)])
    assert ring.authenticate(f"Bearer {key}").id == "new"


def test_keyring_maps_each_key_to_its_agency_and_accepts_any_scheme_case():
    ring = KeyRing([TAX, JUDICIARY])
    assert ring.authenticate("Bearer tax-secret-key") is TAX
    assert ring.authenticate("bearer  judiciary-secret-key ") is JUDICIARY


@pytest.mark.parametrize("header, reason", [
    (None, "missing Authorization header"),
    ("", "missing Authorization header"),
    ("Basic dGF4OnNlY3JldA==", "not a Bearer credential"),
    ("Bearer", "malformed key"),
    ("Bearer tax-secret-key extra", "malformed key"),
    ("Bearer " + "x" * 1000, "malformed key"),
    ("Bearer tax-secret-kez", "unknown key"),
])
def test_bad_credentials_are_refused_with_one_message(header, reason):
    ring = KeyRing([TAX, JUDICIARY])
    with pytest.raises(Unauthorized) as refused:
        ring.authenticate(header)
    assert refused.value.reason == reason
    assert str(refused.value) == str(Unauthorized("anything"))   # caller learns nothing


def test_keyring_update_swaps_keys_for_rotation():
    ring = KeyRing([TAX])
    rotated = Agency(**{**TAX.__dict__, "keys": (hash_key("tax-new-key"),)})
    ring.update([rotated])
    assert ring.authenticate("Bearer tax-new-key").id == "tax"
    with pytest.raises(Unauthorized):
        ring.authenticate("Bearer tax-secret-key")


def test_keyring_update_forgets_keys_already_seen():
    """Accepted headers are remembered per ring: a rotated-out key stops working at once."""
    ring = KeyRing([TAX, JUDICIARY])
    for _ in range(3):
        assert ring.authenticate("Bearer tax-secret-key") is TAX
    with pytest.raises(Unauthorized):
        ring.authenticate("Bearer tax-secret-kez")
    with pytest.raises(Unauthorized):              # refusals are never remembered
        ring.authenticate("Bearer tax-secret-kez")
    rotated = Agency(**{**TAX.__dict__, "keys": (hash_key("tax-new-key"),)})
    ring.update([rotated, JUDICIARY])
    with pytest.raises(Unauthorized) as refused:
        ring.authenticate("Bearer tax-secret-key")
    assert refused.value.reason == "unknown key"
    assert ring.authenticate("Bearer tax-new-key") is rotated


def test_keyring_remembers_a_bounded_number_of_header_values(monkeypatch):
    monkeypatch.setattr(auth, "MAX_REMEMBERED", 2)
    ring = KeyRing([TAX, JUDICIARY])
    headers = ["Bearer tax-secret-key", "bearer tax-secret-key", "Bearer  tax-secret-key"]
    for header in headers * 2:                     # past the bound: looked up each time
        assert ring.authenticate(header) is TAX
    assert len(ring._by_header) == 2


def test_keyring_refuses_a_key_shared_by_two_agencies():
    twin = agency("twin", "tax-secret-key")
    with pytest.raises(ValueError, match="share an API key"):
        KeyRing([TAX, twin])


# -- senders ---------------------------------------------------------------------------

def test_own_number_and_mask_are_allowed():
    assert check_sender(TAX, "40401234") == ("number", "40401234")
    assert check_sender(TAX, "۴۰۴۰۱۲۳۴") == ("number", "40401234")   # Persian digits
    assert check_sender(TAX, "MALIAT") == ("mask", "MALIAT")


@pytest.mark.parametrize("sender, reason", [
    ("40400135", "number_not_assigned"),        # the judiciary's number
    ("40409999", "number_not_assigned"),        # nobody's 4040 number
    ("ADLIRAN", "mask_not_registered"),         # the judiciary's mask
    ("BANKMELLI", "mask_not_registered"),       # nobody's mask
    ("maliat", "mask_not_registered"),          # masks match exactly
    ("09121234567", "not_a_government_number"),
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    (40401234, "empty"),                        # JSON number, not a string
])
def test_spoofed_or_unknown_senders_are_refused(sender, reason):
    with pytest.raises(SenderNotAllowed) as refused:
        check_sender(TAX, sender)
    assert refused.value.reason == reason


def test_owner_of_names_the_agency_a_refused_sender_belongs_to():
    assert owner_of([TAX, JUDICIARY], "40400135") == "judiciary"
    assert owner_of([TAX, JUDICIARY], "ADLIRAN") == "judiciary"
    assert owner_of([TAX, JUDICIARY], "BANKMELLI") is None


# -- limits ----------------------------------------------------------------------------

class UsedParts:
    """parts_used answers for limits tests that need no database."""

    def __init__(self, used=0):
        self.used = used
        self.asked = []

    def parts_used(self, agency, since):
        self.asked.append((agency, since))
        return defer.succeed(self.used)


def test_tehran_day_starts_at_2030_utc():
    start = start_of_tehran_day(T0)
    assert start == 1_699_993_800.0           # 2023-11-14 20:30:00 UTC
    assert tehran_day(start) == tehran_day(T0) != tehran_day(start - 1)


def test_rate_bucket_allows_a_burst_then_asks_to_retry_after_whole_seconds():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=4)], UsedParts(), clock)
    for _ in range(4):
        limits.reserve("a", 1)
    with pytest.raises(RateLimited) as limited:
        limits.reserve("a", 1)
    assert limited.value.retry_after == 1
    clock.advance(0.25)
    limits.reserve("a", 1)


def test_request_bigger_than_the_bucket_passes_when_full_and_leaves_a_debt():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=10)], UsedParts(), clock)
    limits.reserve("a", 50)                   # 1 s of burst, 4 s of debt
    with pytest.raises(RateLimited) as limited:
        limits.reserve("a", 1)
    assert limited.value.retry_after == 5     # (1 - (10 - 50)) / 10 = 4.1 -> 5
    clock.advance(5)
    limits.reserve("a", 1)


def test_releasing_a_quota_only_reservation_gives_back_quota_but_no_rate_tokens():
    # A broadcast reserves quota alone (its drain is paced apart); giving it back must
    # not credit the agency's rate with tokens it never spent.
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=4)], UsedParts(), clock)
    for _ in range(4):
        limits.reserve("a", 1)
    limits.release(limits.reserve_quota("a", 100))
    assert limits.used_today("a") == 4
    with pytest.raises(RateLimited):
        limits.reserve("a", 1)


def test_quota_counts_parts_and_refuses_without_taking_anything():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=1000, daily=10)], UsedParts(), clock)
    limits.reserve("a", 8)
    with pytest.raises(QuotaExceeded) as exceeded:
        limits.reserve("a", 3)
    assert (exceeded.value.used, exceeded.value.quota) == (8, 10)
    # until Tehran midnight: 2023-11-15 20:30 UTC
    assert exceeded.value.retry_after == int(start_of_tehran_day(T0) + 86400 - T0)
    limits.reserve("a", 2)
    assert limits.used_today("a") == 10


def test_quota_resets_at_tehran_midnight():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=1000, daily=5)], UsedParts(3), clock)
    assert limits.used_today("a") == 3
    with pytest.raises(QuotaExceeded):
        limits.reserve("a", 3)
    clock.advance(start_of_tehran_day(T0) + 86400 - T0)
    limits.reserve("a", 5)


def test_release_gives_back_rate_and_quota():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=5, daily=5)], UsedParts(), clock)
    reservation = limits.reserve("a", 5)
    limits.release(reservation)
    assert limits.used_today("a") == 0
    limits.reserve("a", 5)                    # the tokens came back too


def test_rate_limit_is_checked_before_quota_and_neither_takes_on_refusal():
    clock = Clock()
    clock.advance(T0)
    limits = AgencyLimits([agency("a", "k", rate=2, daily=3)], UsedParts(), clock)
    limits.reserve("a", 2)
    with pytest.raises(RateLimited):
        limits.reserve("a", 2)                # both limits would refuse: rate first
    clock.advance(1)
    with pytest.raises(QuotaExceeded):
        limits.reserve("a", 2)
    limits.reserve("a", 1)                    # the quota refusal consumed no tokens


def test_update_keeps_counters_and_seeds_new_agencies():
    clock = Clock()
    clock.advance(T0)
    used = UsedParts(7)
    limits = AgencyLimits([agency("a", "k", daily=100)], used, clock)
    limits.reserve("a", 3)
    limits.update([agency("a", "k", daily=200), agency("b", "k2")])
    assert limits.used_today("a") == 10
    assert limits.used_today("b") == 7
    assert used.asked == [("a", start_of_tehran_day(T0)), ("b", start_of_tehran_day(T0))]


class SlowUsedParts:
    """parts_used answered later, as a network database would."""

    def __init__(self):
        self.asked = []

    def parts_used(self, agency, since):
        d = defer.Deferred()
        self.asked.append((agency, since, d))
        return d


def test_no_part_is_reserved_before_the_store_has_said_what_was_used_today():
    clock = Clock()
    clock.advance(T0)
    store = SlowUsedParts()
    limits = AgencyLimits([agency("a", "k", rate=1000, daily=1000)], store, clock)
    assert not limits.loaded.called
    with pytest.raises(RateLimited) as waiting:       # 429, Retry-After: 1
        limits.reserve("a", 100)
    assert isinstance(waiting.value, QuotaUnknown) and waiting.value.retry_after == 1
    [(_, since, d)] = store.asked
    assert since == start_of_tehran_day(T0)
    d.callback(990)                                   # sent before this start
    assert limits.loaded.called
    with pytest.raises(QuotaExceeded):
        limits.reserve("a", 100)
    limits.reserve("a", 10)
    assert limits.used_today("a") == 1000


def test_a_failed_read_of_the_count_is_asked_again_by_a_later_request():
    clock = Clock()
    clock.advance(T0)
    store = SlowUsedParts()
    limits = AgencyLimits([agency("a", "k", daily=50)], store, clock)
    store.asked[0][2].errback(OSError("disk I/O error"))
    with pytest.raises(QuotaUnknown):
        limits.reserve("a", 1)
    assert len(store.asked) == 1                      # not at once again
    clock.advance(1)
    with pytest.raises(QuotaUnknown):
        limits.reserve("a", 1)
    store.asked[1][2].callback(49)
    limits.reserve("a", 1)
    with pytest.raises(QuotaExceeded):
        limits.reserve("a", 1)


def test_a_count_read_for_yesterday_is_not_taken_for_today():
    clock = Clock()
    clock.advance(start_of_tehran_day(T0) + 86400 - 1)   # a second before midnight
    store = SlowUsedParts()
    limits = AgencyLimits([agency("a", "k", daily=50)], store, clock)
    clock.advance(2)
    with pytest.raises(QuotaUnknown):
        limits.reserve("a", 1)
    store.asked[0][2].callback(50)                    # yesterday's: all used
    with pytest.raises(QuotaUnknown):
        limits.reserve("a", 1)                        # today's is asked for now
    (_, since, d) = store.asked[-1]
    assert since == start_of_tehran_day(T0) + 86400
    d.callback(0)
    limits.reserve("a", 50)


def _message(store, agency_id, parts, created_at):
    return NewMessage(
        id=store.new_message_id(), agency=agency_id, sender="40401234",
        recipient="989121234567", text="x", priority=0, reference=None, validity_s=3600,
        receipt=True, data_coding=0, esm_class=0x40 if parts > 1 else 0,
        parts=[b"p"] * parts, created_at=created_at)


def test_daily_count_is_seeded_from_the_store_since_tehran_midnight(store, clock):
    today = start_of_tehran_day(T0)
    clock.wait(store.accept([_message(store, "tax", 3, today - 60),     # yesterday
                             _message(store, "tax", 2, today + 60),
                             _message(store, "tax", 4, T0),
                             _message(store, "judiciary", 5, T0)]))
    limits = AgencyLimits([TAX, JUDICIARY], store, clock)
    assert limits.used_today("tax") == 6
    assert limits.used_today("judiciary") == 5


# -- audit -----------------------------------------------------------------------------

def _audit_rows(store):
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as db:
        return [(event, agency, json.loads(detail)) for event, agency, detail in
                db.execute("SELECT event, agency, detail FROM audit ORDER BY rowid")]


def test_sender_refusal_is_stored_and_logged(store, clock, caplog):
    audit = AuditLog(store, clock)
    with caplog.at_level(logging.WARNING, logger="payam.audit"):
        clock.wait(audit.sender_refused("tax", "40400135", "number_not_assigned",
                                        "10.0.0.7", owner="judiciary"))
    assert _audit_rows(store) == [("sender_refused", "tax", {
        "sender": "40400135", "reason": "number_not_assigned", "peer": "10.0.0.7",
        "owner": "judiciary"})]
    assert "40400135" in caplog.text and "judiciary" in caplog.text


def test_a_citizens_number_used_as_sender_is_hashed_in_the_audit_and_masked_in_the_log(
        store, clock, caplog):
    audit = AuditLog(store, clock)
    with caplog.at_level(logging.WARNING, logger="payam.audit"):
        clock.wait(audit.sender_refused("tax", "09121234567", "not_a_government_number",
                                        "10.0.0.7"))
        clock.wait(audit.sender_refused("tax", "+989121234567", "not_a_government_number",
                                        "10.0.0.7"))
    [(_, _, first), (_, _, second)] = _audit_rows(store)
    # One citizen, written two ways: one salted hash, neither the number nor a mask.
    assert first["sender"] == second["sender"] == store.number_hash("989121234567")
    assert first["sender"].startswith("h:") and "98912" not in first["sender"]
    assert "98912****567" in caplog.text
    assert "09121234567" not in caplog.text and "989121234567" not in caplog.text


def test_citizens_numbers_in_any_audit_detail_are_hashed(store, clock):
    audit = AuditLog(store, clock)
    clock.wait(audit._write("link_not_allowed", "tax", {
        "to": ["09121234567", "not a number"], "recipient": "989351234567", "link": "x.ir"}))
    [(_, _, detail)] = _audit_rows(store)
    assert detail == {"to": [store.number_hash("989121234567"), "not a number"],
                      "recipient": store.number_hash("989351234567"), "link": "x.ir"}


def test_unauthorized_attempts_are_audited_once_per_interval_per_peer(store, clock, caplog):
    audit = AuditLog(store, clock)
    with caplog.at_level(logging.WARNING, logger="payam.audit"):
        clock.wait(audit.unauthorized("10.0.0.9", "unknown key"))
        for _ in range(5):
            assert audit.unauthorized("10.0.0.9", "unknown key") is None
        clock.wait(audit.unauthorized("10.0.0.10", "missing Authorization header"))
        clock.advance(11)
        clock.wait(audit.unauthorized("10.0.0.9", "unknown key"))
    rows = _audit_rows(store)
    assert [(r[0], r[2]["peer"], r[2]["suppressed"]) for r in rows] == [
        ("unauthorized", "10.0.0.9", 0), ("unauthorized", "10.0.0.10", 0),
        ("unauthorized", "10.0.0.9", 5)]
    assert caplog.text.count("unauthorized request") == 3


def test_an_audit_row_with_strings_that_are_not_unicode_is_kept_escaped(store, clock,
                                                                         caplog):
    """A lone surrogate cannot be stored as UTF-8: the row is written with it escaped
    (it used to be lost, with only an error in the log)."""
    audit = AuditLog(store, clock)
    with caplog.at_level(logging.WARNING, logger="payam.audit"):
        clock.wait(audit.sender_refused("tax", "MAL\ud800", "mask_not_registered",
                                        "10.0.0.7", owner="x\udfff"))
        clock.wait(audit.unauthorized("10.0.0.8", "bad\ud83d"))
    rows = _audit_rows(store)
    assert [(e, d.get("sender"), d.get("owner"), d["reason"]) for e, _, d in rows] == [
        ("sender_refused", "MAL\\ud800", "x\\udfff", "mask_not_registered"),
        ("unauthorized", None, None, "bad\\ud83d")]
    assert "MAL\\\\ud800" in caplog.text and "lost" not in caplog.text   # %r of it


# -- failed-authentication throttle -------------------------------------------------------

def test_an_address_is_blocked_after_k_failures_in_the_window_and_then_let_go():
    clock = Clock()
    throttle = FailedAuthThrottle(clock, failures=3, window_s=10, block_s=30)
    assert [throttle.failed("10.0.0.1") for _ in range(2)] == [False, False]
    assert throttle.retry_after("10.0.0.1") is None
    assert throttle.failed("10.0.0.1") is True
    assert throttle.retry_after("10.0.0.1") == 30
    assert throttle.retry_after("10.0.0.2") is None           # others are not affected
    clock.advance(29.5)
    assert throttle.retry_after("10.0.0.1") == 1
    assert throttle.failed("10.0.0.1") is False                # a block does not grow
    clock.advance(0.5)
    assert throttle.retry_after("10.0.0.1") is None
    assert throttle.failed("10.0.0.1") is False                # counting starts afresh


def test_failures_spread_beyond_the_window_never_block():
    clock = Clock()
    throttle = FailedAuthThrottle(clock, failures=3, window_s=10, block_s=30)
    for _ in range(10):
        throttle.failed("10.0.0.1")
        throttle.failed("10.0.0.1")
        clock.advance(10)
    assert throttle.retry_after("10.0.0.1") is None


def test_the_throttle_table_stays_bounded_and_drops_expired_entries_first():
    clock = Clock()
    throttle = FailedAuthThrottle(clock, failures=2, window_s=10, block_s=100,
                                  max_addresses=3)
    throttle.failed("keep"), throttle.failed("keep")          # blocked until t=100
    clock.advance(20)
    throttle.failed("old")                                    # its window ends at t=30
    clock.advance(20)
    throttle.failed("a")                                      # the table is full
    clock.advance(1)
    throttle.failed("b")                                      # "old" makes room
    assert len(throttle) == 3 and throttle.retry_after("keep") == 59
    for i in range(1000):                                     # a rotating flood
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
        assert len(throttle) <= 3


def test_audit_refused_filter_keeps_every_refusal_the_audit_log_writes(store, clock):
    # `payam-gateway audit --refused` (store/audit_trail.REFUSALS) knows the events by
    # the names AuditLog writes them under: a link refusal is one (it was missed).
    from gateway.store import audit_trail
    audit = AuditLog(store, clock)
    clock.wait(audit.sender_refused("tax", "40400135", "number_not_assigned", "10.0.0.7",
                                    owner="judiciary"))
    clock.wait(audit.link_refused("tax", "evil.example", "10.0.0.7"))
    clock.wait(audit.unauthorized("10.0.0.8", "unknown key"))
    with sqlite3.connect(f"file:{store.path}?mode=ro", uri=True) as db:
        refused = [event for _, _, event, _, _ in audit_trail.rows(db, refused=True)]
    assert refused == ["sender_refused", "link_refused"]


def test_a_4040_answers_recipient_is_hashed_in_its_audit_row_not_masked(store, clock):
    # Every citizen's number in the audit is the salted hash (so `audit --number` finds
    # the 4040 answers a citizen got); a mask would be neither findable nor the rule.
    audit = AuditLog(store, clock)
    clock.wait(audit.platform_message("authenticity_answer", "989121234567", "m1"))
    [(event, agency, detail)] = _audit_rows(store)
    assert (event, agency) == ("platform_message", None)
    assert detail == {"kind": "authenticity_answer",
                      "to": store.number_hash("989121234567"), "message": "m1"}
