"""One fallback email as RFC 5322 bytes: UTF-8 text, the agency's name in the subject,
a Message-ID derived from the message id (a resend after a crash is recognisable as
the same email)."""

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

SUBJECT_TAIL = " (پیام رسمی)"            # "(official message)"


def message_id_header(message_id, sender):
    """<message id.sms-fallback@the From address's domain>: the same on every attempt."""
    return f"<{message_id}.sms-fallback@{sender.rpartition('@')[2]}>"


def compose(*, message_id, sender, to, agency_name, text, at):
    """The email's bytes, LF line ends (twisted.mail's client sends them as CRLF, with
    its dot-stuffing). `at`: seconds since the epoch."""
    mail = EmailMessage(policy=SMTP)
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = agency_name + SUBJECT_TAIL
    mail["Date"] = formatdate(at, usegmt=True)
    mail["Message-ID"] = message_id_header(message_id, sender)
    mail["Auto-Submitted"] = "auto-generated"      # RFC 3834: no auto-replies to it
    mail["X-Payam-Message-Id"] = message_id
    # base64: Persian (and its ZWNJ) arrive byte for byte, whatever the relays do.
    mail.set_content(text, subtype="plain", charset="utf-8", cte="base64")
    return mail.as_bytes(policy=SMTP.clone(linesep="\n"))


def mask_address(address):
    """For logs: the first character and the domain ("a…@example.ir"), or "…"."""
    local, at, domain = (address or "").rpartition("@")
    if not at or not local:
        return "…"
    return f"{local[0]}…@{domain}"
