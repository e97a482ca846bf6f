"""The email fallback's sender: due fallbacks from the store, sent by SMTP, settled.

A message accepted with `"fallback": "email"` has a row in the store from its accept
(gateway/store/email_fallbacks.py); a trigger makes it due when its SMS fails or
expires, so nothing here watches the dispatcher or receipts, and a crash loses none.
Every `POLL_S` the sender claims the due rows (each attempt counted, and the row held
past the attempt's timeout, so a crash mid-send means a later attempt with the same
Message-ID, never a lost email), sends each with the SMTP client (at most
`CONCURRENCY` at once) and records the outcome:

  the server took it            sent
  5xx (address or text refused) failed at once
  4xx, no connection, timeout   pending again after a backoff (retry_s from, ×2, to),
                                failed at the `max_attempts`-th attempt

Never logged: the address (masked: first character and domain) or the text.
"""

import logging
import random

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gateway import metrics
from gateway.mail.compose import compose, mask_address
from gateway.mail.smtp import is_permanent

log = logging.getLogger("payam.mail")

POLL_S = 5.0
CONCURRENCY = 8                  # emails being sent at once
MAX_ERROR = 200                  # characters of an error kept with the row
CLAIM_MARGIN_S = 60.0            # a claimed row waits this long past its attempt's timeout


def retry_delay(attempt, retry_s, rng):
    """Seconds before attempt `attempt + 1`: from retry_s[0], doubling, capped at
    retry_s[1], jittered (0.5–1×)."""
    low, high = retry_s
    return min(high, low * 2 ** min(attempt - 1, 30)) * rng.uniform(0.5, 1.0)


class EmailFallbackSender:
    def __init__(self, store, clock, client, settings, agency_name=None, *,
                 concurrency=CONCURRENCY, rng=None):
        """client: .send(to, data) -> Deferred (gateway.mail.smtp.SmtpClient); settings:
        the SmtpSettings (sender, timeout_s, max_attempts, retry_s); agency_name(id):
        the agency's name for the subject (its id when unknown)."""
        self.store = store
        self.clock = clock
        self.client = client
        self.settings = settings
        self.agency_name = agency_name if agency_name is not None else (lambda a: a)
        self.concurrency = concurrency
        self.rng = rng if rng is not None else random.Random()
        self.in_flight = 0
        self._polling = False
        self._poller = None
        self._idle = []                  # stop()'s waiters for the sends in flight

    def start(self):
        self._poller = LoopingCall(self.poll)
        self._poller.clock = self.clock
        self._poller.start(POLL_S, now=True).addErrback(
            lambda f: log.error("email fallback poller stopped: %s", f.getErrorMessage()))

    def stop(self):
        """No more polls; Deferred firing once the sends in flight are settled (an
        unsettled one is tried again after its claim, so the caller may bound it)."""
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        if self.in_flight == 0:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle.append(d)
        return d

    def poll(self):
        """Claim and send what is due, as far as the concurrency allows."""
        room = self.concurrency - self.in_flight
        if room <= 0 or self._polling:
            return defer.succeed(None)
        self._polling = True
        now = self.clock.seconds()
        busy_until = now + self.settings.timeout_s + CLAIM_MARGIN_S
        d = self.store.claim_email_fallbacks(now, room, busy_until)
        d.addCallback(self._send_all)
        d.addErrback(lambda f: log.error("email fallbacks not read: %s", f.getErrorMessage()))

        def polled(_):
            self._polling = False
        d.addBoth(polled)
        return d

    def _send_all(self, rows):
        for row in rows:
            self._send(*row)

    def _send(self, message_id, agency, address, attempt, text, created_at, sms_status):
        self.in_flight += 1
        try:
            data = compose(message_id=message_id, sender=self.settings.sender, to=address,
                           agency_name=self.agency_name(agency), text=text,
                           at=self.clock.seconds())
            d = self.client.send(address, data)
        except Exception:
            d = defer.fail()
        d.addBoth(self._answered, message_id, agency, address, attempt)

    def _answered(self, outcome, message_id, agency, address, attempt):
        now = self.clock.seconds()
        if not isinstance(outcome, Failure):
            result, status, next_at, error = "sent", "sent", None, None
            log.info("email fallback of message %s sent to %s (attempt %d)", message_id,
                     mask_address(address), attempt)
        else:
            # A server's refusal may quote the address: kept and logged masked only.
            error = (f"{outcome.type.__name__}: {outcome.getErrorMessage()}"
                     .replace(address, mask_address(address))[:MAX_ERROR])
            if is_permanent(outcome) or attempt >= self.settings.max_attempts:
                result, status, next_at = "failed", "failed", None
                log.warning("email fallback of message %s to %s failed after %d "
                            "attempt(s): %s", message_id, mask_address(address), attempt,
                            error)
            else:
                result, status = "retry", "pending"
                next_at = now + retry_delay(attempt, self.settings.retry_s, self.rng)
                log.info("email fallback of message %s: %s; retry %d", message_id, error,
                         attempt)
        metrics.child(metrics.EMAIL_SENT, result).inc()
        d = self.store.settle_email_fallback(message_id, attempt, status, next_at, error,
                                             now if status == "sent" else None)
        d.addErrback(lambda f: log.error("email fallback outcome not stored (it is tried "
                                         "again after its claim): %s", f.getErrorMessage()))

        def settled(_):
            self.in_flight -= 1
            if self.in_flight == 0:
                waiting, self._idle = self._idle, []
                for waiter in waiting:
                    if not waiter.called:        # (given up on by a bounded stop)
                        waiter.callback(None)
        d.addBoth(settled)
        return d
