"""A loopback SMTP server for tests (twisted.mail's own server side, on the reactor):
it keeps every message it accepts as (envelope sender, recipients, parsed email), and
can refuse recipients with a 550 (`refuse = True`)."""

from email import message_from_bytes
from email.policy import default

from twisted.internet import defer, reactor
from twisted.mail import smtp
from zope.interface import implementer


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, box, sender, recipient):
        self.box, self.sender, self.recipient = box, sender, recipient
        self.lines = []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        raw = b"\r\n".join(self.lines) + b"\r\n"
        self.box.received.append((self.sender, self.recipient,
                                  message_from_bytes(raw, policy=default), raw))
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box):
        self.box = box

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        self.sender = str(origin)
        return origin

    def validateTo(self, user):
        if self.box.refuse:
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Message(self.box, self.sender, str(user.dest))


class SmtpReceiver:
    def __init__(self):
        self.received = []
        self.refuse = False
        self.connections = 0
        box = self

        class Factory(smtp.SMTPFactory):
            protocol = smtp.ESMTP

            def buildProtocol(self, addr):
                box.connections += 1
                p = smtp.SMTPFactory.buildProtocol(self, addr)
                p.delivery = _Delivery(box)
                p.challengers = {}
                return p

        self.port_object = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.port = self.port_object.getHost().port

    def close(self):
        return self.port_object.stopListening()
