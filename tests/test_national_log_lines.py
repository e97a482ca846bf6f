"""The national inbox's failure log lines carry no national ID and no number, even when
a directory adapter's error message does (the type only is logged, as the resolver does)."""

import logging

from twisted.internet import defer

from gateway.config.schema import App
from gateway.national_inbox.errors import DirectoryDown
from gateway.national_inbox.identity import IdentityCheck
from gateway.outbound.fallback import EmailFallback

NID, NUMBER = "0012345679", "989121234567"


class LeakyDirectory:
    """An adapter failing with an error that quotes what it was asked."""

    def lookup(self, national_id):
        return defer.fail(KeyError(f"no row for {national_id}"))

    def lookup_msisdn(self, msisdn):
        return defer.fail(KeyError(f"no row for {msisdn}"))


class Message:
    fallback, error, citizen, recipient, fallback_address = "email", None, None, NUMBER, None


def test_an_identity_check_failing_logs_neither_the_id_nor_the_number(caplog):
    check = IdentityCheck(LeakyDirectory(), audit=None)
    failures = []
    with caplog.at_level(logging.DEBUG):
        check.confirm(App(id="app", name="App", keys=()), NID, NUMBER, "127.0.0.1").addErrback(
            failures.append)
    assert failures and failures[0].check(DirectoryDown)
    assert "directory lookup failed" in caplog.text
    assert NID not in caplog.text and NUMBER not in caplog.text


def test_an_email_address_lookup_failing_logs_no_number(caplog):
    message = Message()
    with caplog.at_level(logging.DEBUG):
        EmailFallback(LeakyDirectory()).find_addresses([message])
    assert message.fallback_address is None
    assert "for an email fallback failed (KeyError)" in caplog.text
    assert NUMBER not in caplog.text
