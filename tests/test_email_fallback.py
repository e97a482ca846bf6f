"""The email fallback (issue 12 item 6), over real loopback sockets: the agency API
accepts `"fallback": "email"` (only with `smtp:` configured), the address is found at
accept, and a message whose SMS fails or expires is sent by email through twisted.mail
to a loopback SMTP server; a delivered SMS sends nothing; an SMTP server that is down
is retried a bounded number of times; the store's state keeps a restart from sending
twice. The sender's time is a Clock (its polls and backoff); sockets are real."""

import json

from smtp_receiver import SmtpReceiver
from store_fixtures import open_store
from test_api import agency, call
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.trial import unittest

from conftest import wait_until
from gateway import metrics
from gateway.citizens.directory import FileDirectory
from gateway.config.schema import SmtpSettings
from gateway.http.api import AgencyAPI
from gateway.http.server import HTTPFactory
from gateway.mail.sender import EmailFallbackSender
from gateway.mail.smtp import SmtpClient
from gateway.model import Citizen, PartOutcome
from gateway.outbound.accept import Outbound
from gateway.outbound.fallback import EmailFallback
from gateway.policy.audit import AuditLog
from gateway.policy.auth import KeyRing
from gateway.policy.limits import AgencyLimits

TEXT = ("شهروند گرامی، اظهارنامه\u200cی مالیاتی شما ثبت نشد؛ "
        "لطفاً پیش از سررسید اقدام فرمایید.")
TAX_NAME = "سازمان امور مالیاتی"
CITIZENS = [Citizen("0012345679", "989121234567", "reza@example.ir"),
            Citizen("0012345680", "989121111111", None)]
AGENCIES = [agency("tax", ["40401234"], ["MALIAT"])]
AGENCIES[0] = type(AGENCIES[0])(**{**AGENCIES[0].__dict__, "name": TAX_NAME})


def sent_total(result):
    return metrics.EMAIL_SENT.labels(result)._value.get()


class EmailFallbackTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.store, self.db_path = open_store(self, "payam-email-")
        self.smtp = SmtpReceiver()
        self.addCleanup(self.smtp.close)
        self.clock = Clock()
        self.clock.advance(reactor.seconds())
        self.port = self.listen(self.api(smtp=True))

    def api(self, smtp):
        keyring, audit = KeyRing(AGENCIES), AuditLog(self.store, reactor)
        limits = AgencyLimits(AGENCIES, self.store, self.clock)
        outbound = Outbound(
            self.store, limits, audit, clock=reactor, agencies=lambda: keyring.agencies,
            email_fallback=EmailFallback(FileDirectory(CITIZENS)) if smtp else None)
        return AgencyAPI(outbound, self.store, keyring, audit, clock=reactor)

    def listen(self, api):
        factory = HTTPFactory(api.router, clock=reactor)
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.stop)
        self.addCleanup(listening.stopListening)
        return listening.getHost().port

    def settings(self, **overrides):
        values = dict(host="127.0.0.1", port=self.smtp.port, sender="notify@payam.gov.ir",
                      timeout_s=3.0, max_attempts=3, retry_s=(60.0, 600.0))
        values.update(overrides)
        return SmtpSettings(**values)

    def sender(self, store=None, **overrides):
        settings = self.settings(**overrides)
        names = {a.id: a.name for a in AGENCIES}
        return EmailFallbackSender(store or self.store, self.clock,
                                   SmtpClient(settings, reactor), settings, names.get)

    @defer.inlineCallbacks
    def post(self, port=None, **fields):
        body = {"from": "40401234", "to": "09121234567", "text": TEXT, **fields}
        status, _, raw = yield threads.deferToThread(
            call, port or self.port, "POST", "/v1/messages", body, "tax-key")
        return status, json.loads(raw)

    @defer.inlineCallbacks
    def get(self, message_id):
        status, _, raw = yield threads.deferToThread(
            call, self.port, "GET", f"/v1/messages/{message_id}", None, "tax-key")
        self.assertEqual(status, 200)
        return json.loads(raw)

    @defer.inlineCallbacks
    def accepted(self, **fields):
        status, document = yield self.post(fallback="email", **fields)
        self.assertEqual(status, 202, document)
        return document["messages"][0]["id"]

    @defer.inlineCallbacks
    def sms_fails(self, message_id):
        """What the dispatcher records for an SMSC's permanent error."""
        yield self.store.claim(10, reactor.seconds() + 1)
        yield self.store.record([PartOutcome(message_id, seq, "failed", operator="mci",
                                             error="ESME_RINVDSTADR (0x0000000B)")
                                 for seq in (1, 2)])
        self.catch_up()

    def catch_up(self):
        """The sender's clock to the store's time (the SMS ended at reactor time)."""
        self.clock.advance(max(0.0, reactor.seconds() - self.clock.seconds()) + 0.001)

    @defer.inlineCallbacks
    def sms_delivered(self, message_id):
        yield self.store.claim(10, reactor.seconds() + 1)
        yield self.store.record([PartOutcome(message_id, seq, "submitted", operator="mci",
                                             smsc_id=f"ab{seq}") for seq in (1, 2)])
        met = yield self.store.apply_receipts(
            [("mci", f"ab{seq}", "delivered", None) for seq in (1, 2)], {"mci": "raw"})
        self.assertEqual(met, [True, True])

    @defer.inlineCallbacks
    def row(self, message_id):
        yield self.store._write(lambda conn: None)      # earlier writes committed
        row = yield self.store.email_fallback(message_id)
        return row

    # -- the fallback ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_failed_sms_is_sent_by_email_with_its_text_intact(self):
        message_id = yield self.accepted()
        document = yield self.get(message_id)
        self.assertEqual(document["channels"], {"sms": "queued", "email": "pending"})
        sender = self.sender()
        yield sender.poll()
        self.assertEqual(self.smtp.received, [])        # the SMS has not ended yet

        before = sent_total("sent")
        yield self.sms_fails(message_id)
        yield sender.poll()
        yield wait_until(reactor, lambda: self.smtp.received and sender.in_flight == 0)
        [(envelope_from, envelope_to, mail, raw)] = self.smtp.received
        self.assertEqual((envelope_from, envelope_to),
                         ("notify@payam.gov.ir", "reza@example.ir"))
        self.assertEqual(mail["From"], "notify@payam.gov.ir")
        self.assertEqual(mail["To"], "reza@example.ir")
        self.assertIn(TAX_NAME, mail["Subject"])
        self.assertEqual(mail["Message-ID"], f"<{message_id}.sms-fallback@payam.gov.ir>")
        self.assertEqual(mail.get_content_charset(), "utf-8")
        # Text in MIME's canonical form (CRLF line ends), byte for byte: ZWNJ kept.
        self.assertEqual(mail.get_content().replace("\r\n", "\n").rstrip("\n"), TEXT)
        self.assertIn("\u200c", mail.get_content())
        self.assertEqual(sent_total("sent"), before + 1)

        row = yield self.row(message_id)
        self.assertEqual((row["status"], row["attempts"]), ("sent", 1))
        document = yield self.get(message_id)
        self.assertEqual(document["status"], "failed")
        self.assertEqual(document["channels"], {"sms": "failed", "email": "sent"})
        # Sent is sent: later polls send nothing more.
        self.clock.advance(3600)
        yield sender.poll()
        self.assertEqual(len(self.smtp.received), 1)

    @defer.inlineCallbacks
    def test_an_expired_sms_falls_back_too(self):
        message_id = yield self.accepted(validity_s=60)
        yield self.store._write(lambda conn: conn.execute(
            "UPDATE messages SET created_at = created_at - 120 WHERE id = ?", (message_id,)))
        expired = yield self.store.expire_unsent()
        self.assertEqual(expired, 2)
        self.catch_up()
        sender = self.sender()
        yield sender.poll()
        yield wait_until(reactor, lambda: self.smtp.received and sender.in_flight == 0)
        self.assertEqual(self.smtp.received[0][1], "reza@example.ir")
        document = yield self.get(message_id)
        self.assertEqual(document["channels"], {"sms": "expired", "email": "sent"})

    @defer.inlineCallbacks
    def test_a_delivered_sms_sends_no_email(self):
        message_id = yield self.accepted()
        yield self.sms_delivered(message_id)
        sender = self.sender()
        self.clock.advance(3600)
        yield sender.poll()
        self.assertEqual((self.smtp.received, self.smtp.connections), ([], 0))
        document = yield self.get(message_id)
        self.assertEqual(document["channels"], {"sms": "delivered", "email": "not_needed"})

    @defer.inlineCallbacks
    def test_smtp_down_is_retried_with_backoff_then_failed_after_the_bound(self):
        yield self.smtp.close()                         # nothing listens there now
        message_id = yield self.accepted()
        yield self.sms_fails(message_id)
        sender = self.sender(max_attempts=3, retry_s=(60.0, 600.0))
        retries, failed = sent_total("retry"), sent_total("failed")
        for attempt in (1, 2, 3):
            yield sender.poll()
            yield wait_until(reactor, lambda: sender.in_flight == 0)
            row = yield self.row(message_id)
            self.assertEqual(row["attempts"], attempt)
            if attempt < 3:
                self.assertEqual(row["status"], "pending")
                wait = row["next_at"] - self.clock.seconds()
                self.assertTrue(30 * attempt <= wait <= 60 * 2 ** (attempt - 1), wait)
                yield sender.poll()                     # not due yet: nothing tried
                self.assertEqual((yield self.row(message_id))["attempts"], attempt)
                self.clock.advance(wait + 1)
        self.assertEqual(row["status"], "failed")
        self.assertIn("refused", row["error"].lower())
        self.assertEqual((sent_total("retry"), sent_total("failed")),
                         (retries + 2, failed + 1))
        self.clock.advance(86400)
        yield sender.poll()
        self.assertEqual((yield self.row(message_id))["attempts"], 3)
        document = yield self.get(message_id)
        self.assertEqual(document["channels"]["email"], "failed")

    @defer.inlineCallbacks
    def test_a_refused_address_fails_at_once(self):
        self.smtp.refuse = True
        message_id = yield self.accepted()
        yield self.sms_fails(message_id)
        sender = self.sender()
        yield sender.poll()
        yield wait_until(reactor, lambda: sender.in_flight == 0)
        row = yield self.row(message_id)
        self.assertEqual((row["status"], row["attempts"]), ("failed", 1))
        self.assertIn("550", row["error"])
        self.assertNotIn("reza@", row["error"])           # masked, never the address

    @defer.inlineCallbacks
    def test_a_restart_sends_nothing_twice(self):
        message_id = yield self.accepted()
        yield self.sms_fails(message_id)
        sender = self.sender()
        yield sender.poll()
        yield wait_until(reactor, lambda: self.smtp.received and sender.in_flight == 0)
        yield self.store.close()
        # The next run, on the same file: the row says sent.
        store, _ = self._reopen()
        again = self.sender(store)
        self.clock.advance(3600)
        yield again.poll()
        self.assertEqual(len(self.smtp.received), 1)

    @defer.inlineCallbacks
    def test_a_crash_mid_send_is_retried_once_its_claim_runs_out_with_the_same_message_id(self):
        message_id = yield self.accepted()
        yield self.sms_fails(message_id)
        # A run claims the row and dies before the mail server answers.
        claimed = yield self.store.claim_email_fallbacks(
            self.clock.seconds(), 8, self.clock.seconds() + 63)
        self.assertEqual(len(claimed), 1)
        sender = self.sender()
        yield sender.poll()                              # still claimed: not sent
        self.assertEqual(self.smtp.connections, 0)
        self.clock.advance(64)
        yield sender.poll()
        yield wait_until(reactor, lambda: self.smtp.received and sender.in_flight == 0)
        self.assertEqual(self.smtp.received[0][2]["Message-ID"],
                         f"<{message_id}.sms-fallback@payam.gov.ir>")
        self.assertEqual((yield self.row(message_id))["attempts"], 2)

    @defer.inlineCallbacks
    def test_a_silent_mail_server_is_given_up_on_after_timeout_s_and_retried(self):
        from twisted.internet.protocol import Factory, Protocol
        silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        message_id = yield self.accepted()
        yield self.sms_fails(message_id)
        sender = self.sender(port=silent.getHost().port, timeout_s=0.3)
        yield sender.poll()
        yield wait_until(reactor, lambda: sender.in_flight == 0)
        row = yield self.row(message_id)
        self.assertEqual((row["status"], row["attempts"]), ("pending", 1))
        self.assertIn("SmtpTimeout", row["error"])

    @defer.inlineCallbacks
    def test_an_idempotency_key_reused_without_the_fallback_is_a_mismatch(self):
        status, first = yield self.post(fallback="email", idempotency_key="k1")
        self.assertEqual(status, 202)
        status, again = yield self.post(fallback="email", idempotency_key="k1")
        self.assertEqual((status, again), (202, first))
        status, other = yield self.post(idempotency_key="k1")
        self.assertEqual((status, other["error"]["code"]), (409, "idempotency_mismatch"))

    def _reopen(self):
        from gateway.store import Store
        store = Store(self.db_path, reactor)
        store.open()
        self.addCleanup(store.close)
        return store, self.db_path

    # -- at accept --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_without_smtp_the_fallback_is_refused_and_only_email_is_known(self):
        port = self.listen(self.api(smtp=False))
        status, document = yield self.post(port, fallback="email")
        self.assertEqual(status, 400)
        self.assertEqual(document["error"]["code"], "invalid_request")
        self.assertIn("smtp", document["error"]["message"])
        status, document = yield self.post(fallback="fax")
        self.assertEqual((status, document["error"]["code"]), (400, "invalid_request"))
        status, document = yield self.post(port)         # no fallback asked: fine
        self.assertEqual(status, 202)
        self.assertNotIn("channels", (yield self.get(document["messages"][0]["id"])))

    @defer.inlineCallbacks
    def test_no_address_is_accepted_for_sms_with_the_email_unavailable(self):
        message_id = yield self.accepted(to="09121111111")       # no email in the file
        other = yield self.accepted(to="09351234567")            # not in the file
        for mid in (message_id, other):
            document = yield self.get(mid)
            self.assertEqual(document["channels"], {"sms": "queued", "email": "unavailable"})
        yield self.sms_fails(message_id)
        yield self.sender().poll()
        self.assertEqual(self.smtp.connections, 0)

    @defer.inlineCallbacks
    def test_a_national_id_recipient_uses_the_directory_entry_s_email(self):
        # The accept path sets NewMessage.citizen for a national-ID recipient; the
        # fallback takes its email from there, never asking by number.
        fallback = EmailFallback(directory=None)
        from gateway.model import NewMessage
        message = NewMessage(id="m1", agency="tax", sender="40401234",
                             recipient="989350000000", text=TEXT, priority=0,
                             reference=None, validity_s=60, receipt=True, data_coding=8,
                             esm_class=0, parts=[b"x"], created_at=0.0,
                             citizen=Citizen("0012345679", "989350000000", "a@b.ir"),
                             fallback="email")
        yield fallback.find_addresses([message])
        self.assertEqual(message.fallback_address, "a@b.ir")



class _HeldClient:
    """send() answers when the test says; records what it was given."""

    def __init__(self):
        self.sent = []

    def send(self, to, data):
        d = defer.Deferred()
        self.sent.append((to, data, d))
        return d


def test_logs_never_carry_the_address_or_text_and_stop_waits_for_sends(tmp_path, caplog):
    import logging

    from threaded_clock import ThreadedClock

    from gateway.model import NewMessage
    from gateway.store import Store
    from gateway.mail.smtp import SmtpTimeout

    clock = ThreadedClock()
    store = Store(tmp_path / "gateway.db", clock, commit_interval=0.0)
    store.open()
    try:
        messages = [NewMessage(id=store.new_message_id(), agency="tax", sender="40401234",
                               recipient="989121234567", text=TEXT, priority=0,
                               reference=None, validity_s=3600, receipt=True,
                               data_coding=8, esm_class=0, parts=[b"x"],
                               created_at=clock.seconds(), fallback="email",
                               fallback_address="reza@example.ir") for _ in range(2)]
        clock.wait(store.accept(messages))
        clock.wait(store.claim(10, clock.seconds() + 1))
        clock.wait(store.record([PartOutcome(m.id, 1, "failed", error="x")
                                 for m in messages]))
        client = _HeldClient()
        settings = SmtpSettings(host="127.0.0.1", sender="notify@payam.gov.ir",
                                max_attempts=2)
        sender = EmailFallbackSender(store, clock, client, settings)
        clock.advance(1)
        with caplog.at_level(logging.DEBUG, logger="payam.mail"):
            clock.wait(sender.poll())
            assert [to for to, _, _ in client.sent] == ["reza@example.ir"] * 2
            stopped = sender.stop()
            assert not stopped.called                      # two sends in flight
            client.sent[0][2].callback(None)
            client.sent[1][2].errback(SmtpTimeout("550 <reza@example.ir> unknown"))
            clock.wait(stopped)
        lines = "\n".join(record.getMessage() for record in caplog.records)
        assert "r…@example.ir" in lines
        assert "reza@" not in lines and TEXT not in lines and "شهروند" not in lines
        row = clock.wait(store.email_fallback(messages[1].id))
        assert row["status"] == "pending" and "reza@" not in row["error"]
    finally:
        clock.wait(store.close())
