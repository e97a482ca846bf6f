"""Kannel-compatible `GET|POST /cgi-bin/sendsms`, for agencies migrating from Kannel.

An agency's existing Kannel integration works by changing the URL: its parameters
(Kannel's user guide, "Sending SMS" / smsbox's sendsms) come in the query string, or in
a form-encoded POST body; `username` is the agency id and `password` one of its keys,
checked by the API's own authentication, failed-authentication throttle included. The
request becomes a `Submission` for the one accept path (gateway.outbound), so sender
policy, numbers, text length, rate and quota are exactly the JSON API's. Answers are
Kannel's: plain text, `202 0: Accepted for delivery`, errors as `<what>, rejected` with
Kannel's statuses; our message ids go in `X-Payam-Message-Ids`. A refused sender is
refused (403), never replaced by another.

Text arrives as bytes in `charset` (Kannel's default: UTF-8, or UTF-16BE with
`coding=2`); how it goes on the air is our rule (GSM 7-bit when it can, else UCS2)
whatever `coding` says. `dlr-url` is checked as Kannel checks it and ignored: statuses
are read with GET /v1/messages/{id}. Binary messages (`udh`, `coding=1`) and `deferred`
are refused rather than sent differently from what was asked.
"""

import codecs
import logging
import re
from urllib.parse import unquote_to_bytes

from twisted.python.failure import Failure

from gateway.http.errors import ApiError
from gateway.http.server import Response
from gateway.model import EMERGENCY, HIGH, NORMAL
from gateway.outbound import errors as refusals
from gateway.outbound.submission import Accepted, Submission

log = logging.getLogger("payam.kannel")

PATH = "/cgi-bin/sendsms"
TEXT_TYPE = "text/plain; charset=utf-8"
FORM_TYPE = "application/x-www-form-urlencoded"
IDS_HEADER = "X-Payam-Message-Ids"
ACCEPTED = "0: Accepted for delivery"
MAX_RECIPIENTS = 1000
MIN_VALIDITY_MIN, MAX_VALIDITY_MIN = 1, 7 * 24 * 60     # the JSON API's 60 s .. 7 days
DEFAULT_VALIDITY_S = 86400
# Kannel's 0..3 (higher first) onto ours: 3, the highest, is our emergency lane.
PRIORITIES = {0: NORMAL, 1: HIGH, 2: HIGH, 3: EMERGENCY}
DLR_FINAL = 1 | 2                    # Kannel's dlr-mask bits "delivered" and "failed"
_SURROGATE = re.compile("[\ud800-\udfff]")    # what some codecs (utf-7) can decode to

# What each refusal of the accept path is in Kannel's words, with its status.
_REFUSALS = {
    refusals.SenderRefused: (403, "Sender not allowed"),
    refusals.LinkRefused: (403, "Link not allowed"),
    refusals.InvalidRecipients: (400, "Invalid receiver number"),
    refusals.TooManyParts: (400, "Text too long"),
    refusals.UnsendableText: (400, "Charset or body misformed"),
    refusals.OverRate: (429, "Rate limit exceeded"),
    refusals.OverQuota: (429, "Daily quota exceeded"),
    refusals.Overloaded: (503, "Temporarily unavailable"),
}


class Rejected(Exception):
    """A request Kannel would reject: its status and its text."""

    def __init__(self, status, text, headers=None):
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}


def text_response(status, text, headers=None):
    all_headers = {"Content-Type": TEXT_TYPE}
    if headers:
        all_headers.update(headers)
    return Response(status, text.encode("utf-8"), all_headers)


class KannelSendSMS:
    def __init__(self, outbound, authenticate):
        """outbound: the accept path; authenticate(peer, authorization, agency_id): the
        API's authentication (throttle and audit included), raising ApiError."""
        self.outbound = outbound
        self.authenticate = authenticate

    def __call__(self, request):
        try:
            if request.method == "HEAD":     # HEAD wherever GET, but HEAD must not send
                return text_response(405, "Method not allowed, rejected",
                                     {"Allow": "GET, POST"})
            params = parameters(request)
            agency = self._authenticate(request, params)
            self.outbound.admit()
            submission = submission_of(params)
            return self.outbound.submit(agency, submission, request.peer, _answer)
        except Rejected as rejected:
            return text_response(rejected.status, rejected.text, rejected.headers)
        except refusals.Refusal as refusal:
            return _refused(refusal)

    def _authenticate(self, request, params):
        username, password = param(params, "username", "user"), param(params, "password", "pass")
        try:
            return self.authenticate(request.peer, f"Bearer {password}" if password else None,
                                     username or "")
        except ApiError as error:
            if error.code == "rate_limited":
                raise Rejected(429, f"Too many failed authentications, retry after "
                                    f"{error.headers.get('Retry-After')} s, rejected",
                               {"Retry-After": error.headers.get("Retry-After", "60")}) \
                    from None
            raise Rejected(403, "Authorization failed for sendsms") from None


def parameters(request):
    """{name: [raw bytes values]} from the query string and, for a POST, its form body."""
    raw = [request.raw_query]
    if request.method == "POST" and request.body:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != FORM_TYPE:
            raise Rejected(415, "Unsupported content-type, rejected: send "
                                f"{FORM_TYPE} (or parameters in the query string)")
        raw.append(request.body)
    params = {}
    for chunk in raw:
        for name, value in form_fields(chunk):
            params.setdefault(name.decode("latin-1"), []).append(value)
    return params


def form_fields(chunk):
    """[(name bytes, value bytes)] of a query string or form body, as parse_qsl reads
    it with blank values kept, but on bytes: every percent-escape stays the byte it
    names, for `charset` (what parse_qsl gives in latin-1 both ways, at half its cost:
    the hot path of a migrated agency's every message)."""
    fields = []
    for field in chunk.split(b"&"):
        if not field:
            continue
        name, _, value = field.partition(b"=")
        if b"+" in name:
            name = name.replace(b"+", b" ")
        if b"%" in name:
            name = unquote_to_bytes(name)
        if b"+" in value:
            value = value.replace(b"+", b" ")
        if b"%" in value:
            value = unquote_to_bytes(value)
        fields.append((name, value))
    return fields


def param(params, *names):
    """The first value of the first of `names` given, as text (names and numbers are
    ASCII), or None."""
    for name in names:
        values = params.get(name)
        if values:
            return values[0].decode("utf-8", "replace")
    return None


def _integer(params, name, low, high, what):
    value = param(params, name)
    if value is None or value == "":
        return None
    try:
        number = int(value.strip())
    except ValueError:
        raise Rejected(400, f"{what} field misformed, rejected") from None
    if not low <= number <= high:
        raise Rejected(400, f"{what} field misformed, rejected")
    return number


def submission_of(params):
    """The Submission a Kannel request asks for, or Rejected naming what is wrong."""
    if params.get("udh"):
        raise Rejected(400, "UDH not supported (binary messages), rejected")
    if params.get("deferred"):
        raise Rejected(400, "Deferred field not supported, rejected")
    coding = _integer(params, "coding", 0, 2, "Coding")
    if coding == 1:
        raise Rejected(400, "Coding 1 (8-bit binary) not supported, rejected")

    to = params.get("to")
    if to is None:
        raise Rejected(400, "Missing receiver number, rejected")
    recipients = b" ".join(to).decode("utf-8", "replace").split()
    if not recipients:
        raise Rejected(400, "Empty receiver number not allowed, rejected")
    if len(recipients) > MAX_RECIPIENTS:
        raise Rejected(400, f"More than {MAX_RECIPIENTS} receivers, rejected")

    sender = param(params, "from")
    if not sender:
        raise Rejected(400, "Sender missing and no global set, rejected")

    text = decode_text(params.get("text", [b""])[0], param(params, "charset"), coding)
    if not text:
        raise Rejected(400, "Empty text not allowed, rejected")

    priority = _integer(params, "priority", 0, 3, "Priority")
    validity = _integer(params, "validity", MIN_VALIDITY_MIN, MAX_VALIDITY_MIN, "Validity")
    dlr_mask = _integer(params, "dlr-mask", 0, 63, "DLR-Mask")
    dlr_url = param(params, "dlr-url")
    if dlr_url and not dlr_url.lower().startswith(("http://", "https://")):
        raise Rejected(400, "DLR-URL field misformed, rejected")
    return Submission(
        sender=sender, recipients=recipients, text=text,
        priority=PRIORITIES[priority] if priority is not None else NORMAL,
        reference=None, idempotency_key=None,
        validity_s=validity * 60 if validity is not None else DEFAULT_VALIDITY_S,
        # Receipts are asked for unless a dlr-mask says neither delivered nor failed.
        receipt=dlr_mask is None or bool(dlr_mask & DLR_FINAL))


def decode_text(raw, charset, coding):
    """Kannel's `text` bytes as text: in `charset`, by default UTF-8, or UTF-16BE when
    coding is 2 (UCS-2), as Kannel's user guide says."""
    name = charset.strip() if charset else ("UTF-16BE" if coding == 2 else "UTF-8")
    try:
        codecs.lookup(name)
        text = raw.decode(name)
    except (LookupError, UnicodeDecodeError, ValueError):
        raise Rejected(400, "Charset or body misformed, rejected") from None
    if _SURROGATE.search(text):
        raise Rejected(400, "Charset or body misformed, rejected")
    return text


def _refused(refusal):
    status, what = _REFUSALS.get(type(refusal), (400, "Request refused"))
    headers = ({"Retry-After": str(refusal.retry_after)}
               if refusal.retry_after is not None else None)
    return text_response(status, f"{what}: {refusal.message}, rejected", headers)


def _answer(outcome):
    """The accept path's outcome as Kannel's answer (inside the store's one callback)."""
    if type(outcome) is Accepted:
        ids = ",".join(m.id for m in outcome.messages)
        return text_response(202, ACCEPTED, {IDS_HEADER: ids})
    if isinstance(outcome, Failure) and outcome.check(refusals.Refusal):
        return _refused(outcome.value)
    log.error("sendsms failed", exc_info=(outcome.type, outcome.value, outcome.tb)
              if isinstance(outcome, Failure) else None)
    return text_response(500, "Sending failed.")
