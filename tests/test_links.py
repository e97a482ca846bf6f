"""Item 6: an agency that lists `links` may link only to those hosts.

What a link is (gateway.text.links), hostile texts included; the agencies file's
`links`; the accept path's refusal (audited, nothing stored); the HTTP code."""

import sqlite3

import pytest
from store_fixtures import open_store
from twisted.internet import reactor
from twisted.trial import unittest

from gateway.config import ConfigErrors, load_agencies
from gateway.config.schema import Agency
from gateway.http.errors import api_error
from gateway.outbound import errors
from gateway.outbound.accept import Outbound
from gateway.outbound.submission import Submission
from gateway.policy.auth import hash_key
from gateway.policy.limits import AgencyLimits
from gateway.text.links import hosts_in, normal_host, outside

ALLOWED = ("tax.gov.ir", "my.tax.gov.ir")


@pytest.mark.parametrize("text", [
    "Pay at https://evil.com/pay",
    "hxxp://evil.com",
    "tax.gov.ir.evil.com/login",                      # the listed host as a prefix
    "https://tax.gov.ir@evil.com/",                    # user info: the host is evil.com
    "https://tax.gov.ir:443@evil.com/",
    "evil.com/tax.gov.ir",                             # the listed host in a path
    "visit EVIL.COM now",
    "bit.ly/x1",
    "www.evil",
    "evil[.]com",                                      # defanged
    "evil(.)com",
    "ｅｖｉｌ．ｃｏｍ",                                    # full-width letters and dot
    "evil。com",                                       # ideographic full stop
    "evil۔com",                                        # Arabic full stop
    "tax.gov.іr",                                      # Cyrillic і
    "tаx.gov.ir",                                      # Cyrillic а
    "sub.tax.gov.ir",                                  # subdomains are hosts of their own
    "e\u200cvil\u200c.com",                            # ZWNJ inside the host
    "ev\u00adil.com",                                  # soft hyphen
    "http://١٢٧.٠.٠.١/login",                          # an IP in Arabic-Indic digits
    "پرداخت جریمه: evil.ir",
    "مالیات.ایران",                                    # the Persian IDN TLD
    "mailto:x@evil.com",
    "ftp://files.evil.net",
])
def test_a_link_outside_the_list_is_found(text):
    assert outside(text, ALLOWED) is not None, hosts_in(text)


@pytest.mark.parametrize("text", [
    "اظهارنامه خود را در https://my.tax.gov.ir/login ثبت کنید.",
    "TAX.GOV.IR",
    "tax.gov.ir.",                                     # a trailing full stop
    "http://tax.gov.ir:8080/path?q=1#f",
    "مبلغ ۱.۲۵۰.۰۰۰ ریال است.لطفاً پرداخت کنید",        # amounts, no space after a stop
    "e.g. U.S.A. v1.2 12.30",
    "شهروند گرامی، اظهارنامه\u200cی شما ثبت شد.",
    "info@tax.gov.ir",
])
def test_allowed_hosts_and_plain_prose_pass(text):
    assert outside(text, ALLOWED) is None, hosts_in(text)


def test_hosts_are_compared_in_one_normal_form():
    assert normal_host("TAX.gov.IR.") == "tax.gov.ir"
    assert normal_host("مالیات.ایران") == "xn--mgbaj6hd62f.xn--mgba3a4f16a"
    assert normal_host("tax.gov.іr") != "tax.gov.ir"
    for bad in ("https://tax.gov.ir", "tax.gov.ir/x", "tax..ir", "", "-a.ir", "a b.ir"):
        assert normal_host(bad) is None, bad
    assert hosts_in("see https://evil.com/a and evil.com, EVIL.com") == ["evil.com"]


def test_the_agencies_file_lists_hosts_in_normal_form_and_refuses_urls(tmp_path):
    key = "sha256:" + "a" * 64
    path = tmp_path / "agencies.yaml"
    path.write_text(f"""agencies:
  - id: tax
    keys: ["{key}"]
    numbers: ["40401234"]
    links: ["Tax.Gov.IR", "my.tax.gov.ir", "tax.gov.ir"]
""", encoding="utf-8")
    [tax] = load_agencies(str(path))
    assert tax.links == ("tax.gov.ir", "my.tax.gov.ir")
    path.write_text(f"""agencies:
  - id: tax
    keys: ["{key}"]
    numbers: ["40401234"]
    links:
      - "https://tax.gov.ir/"
      - "localhost"
""", encoding="utf-8")
    with pytest.raises(ConfigErrors) as caught:
        load_agencies(str(path))
    lines = [str(error) for error in caught.value.errors]
    assert len(lines) == 2
    assert "agencies.yaml:6:" in lines[0] and "links[0]" in lines[0]
    assert "agencies.yaml:7:" in lines[1] and "links[1]" in lines[1]


def agency(links):
    return Agency(id="tax", name="tax", keys=(hash_key("tax-key"),), numbers=("40401234",),
                  masks=(), ussd_code=None, rate_per_s=1000, daily_parts=100_000,
                  reply_webhook=None, links=links)


class RecordingAudit:
    def __init__(self):
        self.links = []

    def link_refused(self, agency_id, host, peer):
        self.links.append((agency_id, host, peer))


def submission(text):
    return Submission(sender="40401234", recipients=["09121234567"], text=text, priority=0,
                      reference=None, idempotency_key=None, validity_s=3600, receipt=True)


class AcceptPathLinkTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-links-")
        self.listed, self.unlisted = agency(ALLOWED), agency(())
        self.audit = RecordingAudit()
        limits = AgencyLimits([self.listed], self.store, reactor)
        self.outbound = Outbound(self.store, limits, self.audit, clock=reactor)

    def count(self):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]

    def test_a_link_outside_the_list_is_refused_audited_and_nothing_stored(self):
        refusal = self.assertRaises(errors.LinkRefused, self.outbound.submit, self.listed,
                                    submission("پرداخت: https://tax.gov.ir.evil.com/p"),
                                    "10.0.0.9")
        self.assertEqual(refusal.host, "tax.gov.ir.evil.com")
        self.assertIn("tax.gov.ir.evil.com", refusal.message)
        self.assertEqual(self.audit.links, [("tax", "tax.gov.ir.evil.com", "10.0.0.9")])
        error = api_error(refusal)
        self.assertEqual((error.code, error.status), ("link_not_allowed", 403))
        self.assertEqual(self.count(), 0)

    def test_allowed_links_go_and_an_agency_without_links_is_not_checked(self):
        d1 = self.outbound.submit(self.listed, submission("https://my.tax.gov.ir/a"))
        d2 = self.outbound.submit(self.unlisted, submission("https://evil.com/"))
        d1.addCallback(lambda _: d2)
        d1.addCallback(lambda _: self.assertEqual((self.count(), self.audit.links), (2, [])))
        return d1


class OtherChannelsLinkTests(AcceptPathLinkTests):
    """Every channel carrying an agency's text checks its links: broadcasts (the widest
    reach a leaked key has) and Kannel's sendsms (403, in Kannel's words)."""

    def test_a_broadcast_with_a_link_outside_the_list_is_refused_and_audited(self):
        from gateway.outbound.broadcast import Broadcasts, BroadcastText
        broadcasts = Broadcasts(self.store, self.outbound.limits, self.outbound,
                                clock=reactor)
        text = BroadcastText(sender="40401234", text="پرداخت: evil.com/p", priority=0,
                             validity_s=3600, receipt=True)
        refusal = self.assertRaises(errors.LinkRefused, broadcasts.begin, self.listed,
                                    flow=None, text=text, origin="10.0.0.9")
        self.assertEqual(api_error(refusal).code, "link_not_allowed")
        self.assertEqual(self.audit.links, [("tax", "evil.com", "10.0.0.9")])
        allowed = BroadcastText(sender="40401234", text="https://my.tax.gov.ir/a",
                                priority=0, validity_s=3600, receipt=True)
        broadcasts.begin(self.listed, flow=None, text=allowed)
        broadcasts.begin(self.unlisted, flow=None, text=text)
        self.assertEqual(len(self.audit.links), 1)

    def test_kannel_answers_a_link_refusal_403(self):
        from gateway.http.kannel import _refused
        response = _refused(errors.LinkRefused("evil.com", "the text links to 'evil.com'"))
        self.assertEqual(response.status, 403)
        self.assertIn(b"Link not allowed", response.body)
