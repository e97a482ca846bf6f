"""The classifier's `ussd` entry: a USSD deliver_sm is one dialog step.

Acked at once (ESME_ROK: the network's step timer is ~20 s and we answer well within
it); the step goes to the USSD dialogs (gateway/ussd/dialogs.UssdDialogs, handed in by
the composition root with the pools: `use`), and the page it answers becomes a
submit_sm to the citizen on the bind the request came in on (`pool.submit(pdu,
via=pool.answering(session))`: for transmitter+receiver binds, the transmitter paired
with the receiver it came on), with the operator's op values and its_session_info (end bit on the last
page) from ussd_fields. Before `use`, a USSD PDU is kept raw as before.
"""

import logging

from twisted.internet import defer

from gateway import metrics
from gateway.inbound.raw import keep_raw
from gateway.inbound.ussd_fields import DEFAULT_USSD, answer_tlvs, read_request
from gateway.numbers import mask_msisdn
from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU
from gateway.smpp.pool import NoSession, SessionGone
from gateway.smpp.ratelog import RateLimitedLog
from gateway.text import encode_text

log = logging.getLogger("payam.inbound.ussd")

MAX_SHORT_MESSAGE = 254
# A bind that cannot take an answer this instant (window or write buffer full, the TPS
# budget spent, throttled) gets it again every RETRY_S until ANSWER_WITHIN_S after the
# request (well within the network's ~20 s step timer), at most MAX_RETRYING at once.
ANSWER_WITHIN_S = 5.0
RETRY_S = 0.02
MAX_RETRYING = 10_000
_AGAIN = (c.ESME_RTHROTTLED, c.ESME_RMSGQFUL)


class UssdRequests:
    name = "ussd"

    def __init__(self, store, clock):
        self.store = store
        self.clock = clock
        self.dialogs = None
        self.pools = {}
        self.settings = {}
        self._log = RateLimitedLog(log, clock)
        self.retrying = 0

    def use(self, dialogs, pools, settings=None):
        """dialogs: UssdDialogs; pools: {operator: OperatorPool}; settings: {operator:
        UssdSettings} (the reference's defaults for operators left out)."""
        self.dialogs = dialogs
        self.pools = pools
        self.settings = dict(settings or {})

    def matches(self, inbound):
        return c.TLV_USSD_SERVICE_OP in inbound.pdu.tlvs

    def handle(self, inbound):
        if self.dialogs is None:
            return keep_raw(self.store, inbound)
        metrics.child(metrics.INBOUND, inbound.operator, "ussd").inc()
        settings = self.settings.get(inbound.operator, DEFAULT_USSD)
        request = read_request(inbound.pdu, settings)
        try:
            d = self.dialogs.step(inbound.operator, request.kind, request.msisdn,
                                  request.session_key, request.text)
        except Exception:
            log.exception("USSD step from %s failed", mask_msisdn(request.msisdn))
            return defer.succeed(c.ESME_ROK)
        d.addCallback(self._answer, inbound, request, settings)
        d.addErrback(self._unanswered, inbound, request)
        return defer.succeed(c.ESME_ROK)

    def _answer(self, page, inbound, request, settings):
        if page is None:
            return None
        pool = self.pools.get(inbound.operator)
        if pool is None:
            return None
        pdu = answer_pdu(inbound.pdu, request, page.text, page.end, settings)
        return self._send(pool, pdu, inbound, request)

    def _send(self, pool, pdu, inbound, request):
        d = pool.submit(pdu, via=pool.answering(inbound.session))
        d.addCallbacks(self._answered, self._refused, callbackArgs=(pool, pdu, inbound, request),
                       errbackArgs=(pool, pdu, inbound, request))
        return d

    def _again(self, pool, pdu, inbound, request):
        """Later, on the same bind, while the answer can still help."""
        if (self.clock.seconds() - inbound.received_at >= ANSWER_WITHIN_S
                or self.retrying >= MAX_RETRYING):
            return False
        self.retrying += 1

        def retry():
            self.retrying -= 1
            d = self._send(pool, pdu, inbound, request)
            d.addErrback(self._unanswered, inbound, request)
        self.clock.callLater(RETRY_S, retry)
        return True

    def _refused(self, failure, pool, pdu, inbound, request):
        if failure.check(NoSession) and not failure.check(SessionGone) \
                and self._again(pool, pdu, inbound, request):
            return None
        return failure

    def _answered(self, response, pool, pdu, inbound, request):
        if response.status in _AGAIN and self._again(pool, pdu, inbound, request):
            return None
        if response.status != c.ESME_ROK:
            self._log.info((inbound.operator, "ussd answer refused"),
                           "USSD answer to %s refused by %s: status 0x%08X",
                           mask_msisdn(request.msisdn), inbound.operator, response.status)

    def _unanswered(self, failure, inbound, request):
        self._log.info((inbound.operator, "ussd answer lost"),
                       "USSD answer to %s not sent on %s: %s", mask_msisdn(request.msisdn),
                       inbound.operator, failure.getErrorMessage() or failure.type.__name__)


def answer_pdu(request_pdu, request, text, end, settings=DEFAULT_USSD):
    """The submit_sm answering `request` with one page: to the citizen, from the address
    the request was sent to, USSD's TLVs from the operator's settings."""
    fields = request_pdu.fields
    data_coding, payload = encode_text(text)
    tlvs = answer_tlvs(request, end, settings)
    answer = {
        "service_type": "USSD",
        "source_addr_ton": fields.get("dest_addr_ton", 0),
        "source_addr_npi": fields.get("dest_addr_npi", 0),
        "source_addr": fields.get("destination_addr", ""),
        "dest_addr_ton": fields.get("source_addr_ton", 1),
        "dest_addr_npi": fields.get("source_addr_npi", 1),
        "destination_addr": fields.get("source_addr", ""),
        "data_coding": data_coding,
    }
    if len(payload) > MAX_SHORT_MESSAGE:
        tlvs[c.TLV_MESSAGE_PAYLOAD] = payload
        answer["short_message"] = b""
    else:
        answer["short_message"] = payload
    return PDU(c.SUBMIT_SM, fields=answer, tlvs=tlvs)
