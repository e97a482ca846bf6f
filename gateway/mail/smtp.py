"""Sending one email with twisted.mail's ESMTP client: one connection, no retries of
its own (the fallback sender retries from the store), bounded by `timeout_s` from the
connect to the last reply."""

from io import BytesIO

from twisted.internet import defer
from twisted.mail.smtp import ESMTPSenderFactory, SMTPClientError
from twisted.python.failure import Failure


class SmtpTimeout(Exception):
    """The attempt took longer than timeout_s."""


def is_permanent(failure):
    """A 5xx answer (the address or message refused): retrying will not help."""
    error = failure.value
    code = getattr(error, "code", None) if isinstance(error, SMTPClientError) else None
    return isinstance(code, int) and 500 <= code < 600


class SmtpClient:
    def __init__(self, settings, reactor):
        """settings: the config's SmtpSettings (host, port, sender, username, password,
        starttls, timeout_s)."""
        self.settings = settings
        self.reactor = reactor

    def send(self, to, data):
        """Deferred[None] once the server took the message; fails with its refusal
        (SMTPClientError, `code`), a connection error, or SmtpTimeout."""
        s = self.settings
        finished = defer.Deferred()
        secure = bool(s.username) or s.starttls
        factory = ESMTPSenderFactory(
            s.username, s.password.encode("utf-8") if s.password else None,
            s.sender, [to], BytesIO(data), finished, retries=0, timeout=s.timeout_s,
            requireAuthentication=bool(s.username), requireTransportSecurity=s.starttls,
            heloFallback=not secure, hostname=s.host if s.starttls else None)
        connector = self.reactor.connectTCP(s.host, s.port, factory, timeout=s.timeout_s)
        result = defer.Deferred()

        def expire():
            connector.disconnect()
            if not result.called:
                result.errback(SmtpTimeout(f"no answer within {s.timeout_s:g} s"))
        timer = self.reactor.callLater(s.timeout_s, expire)

        def done(outcome):
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(None) if not isinstance(outcome, Failure) \
                    else result.errback(outcome)
        finished.addBoth(done)
        return result
