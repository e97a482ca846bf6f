"""The simulator's USSD side: a citizen's handset as a USSD gateway would relay it.

`dial(msisdn, code)` sends the deliver_sm that starts a dialog (ussd_service_op 1, a new
its_session_info), `send(msisdn, text)` the citizen's answer (op 18, the same session
number, the sequence bits moved on), `abort(msisdn)` a user abort (op 0x81). Dial and
send fire with the ESME's answer: the submit_sm to that MSISDN carrying
ussd_service_op, read as {"text", "op", "its_session_info", "end"} (end: op 17, or the
its_session_info end bit). Op values and the field the dialled string goes in can be
given per call, to play another vendor's gateway. Answers nobody waits for are kept
(the last few per MSISDN, a bounded number of MSISDNs) for `last(msisdn)`.
"""

from collections import OrderedDict, deque

from twisted.internet import defer

from gateway.smpp import constants as c
from gateway.smpp.pdu import PDU
from gateway.text import decode_payload, encode_text

MAX_MSISDNS = 10_000
KEPT_ANSWERS = 5
USER_ABORT = 0x81


class Dialog:
    __slots__ = ("number", "sequence", "system_id", "destination")

    def __init__(self, number, system_id, destination):
        self.number = number
        self.sequence = 0
        self.system_id = system_id
        self.destination = destination


class UssdSide:
    def __init__(self, factory):
        self.factory = factory
        self.dialogs = OrderedDict()          # msisdn → Dialog
        self.waiting = {}                     # msisdn → Deferred of the next answer
        self.answers = OrderedDict()          # msisdn → deque of answers nobody awaited
        self._next_number = 0

    # -- the citizen's side ---------------------------------------------------------------

    def dial(self, msisdn, code, *, op=c.USSD_PSSR_INDICATION, its_session_info=True,
             dial_field="short_message", system_id=None):
        if not isinstance(code, str) or not code or len(code) > 64:
            raise ValueError("code must be a dial string of at most 64 characters")
        if dial_field not in ("short_message", "destination_addr"):
            raise ValueError("dial_field must be short_message or destination_addr")
        number = None
        if its_session_info:
            self._next_number = (self._next_number + 1) & 0xFF
            number = self._next_number
        destination = code if dial_field == "destination_addr" else "4040"
        dialog = Dialog(number, system_id, destination)
        self._remember(msisdn, dialog)
        text = code if dial_field == "short_message" else ""
        return self._step(msisdn, dialog, text, op)

    def send(self, msisdn, text, *, op=c.USSD_USSR_CONFIRM):
        dialog = self.dialogs.get(msisdn)
        if dialog is None:
            dialog = Dialog(None, None, "4040")   # an answer from nowhere: still sent
        return self._step(msisdn, dialog, text, op)

    def abort(self, msisdn, *, op=USER_ABORT):
        dialog = self.dialogs.pop(msisdn, None) or Dialog(None, None, "4040")
        pdu = self._pdu(msisdn, dialog, "", op, end=True)
        return self.factory.inject_pdu(pdu, dialog.system_id).addCallback(
            lambda response: {"status": response.status})

    def _step(self, msisdn, dialog, text, op):
        pdu = self._pdu(msisdn, dialog, text, op)
        waiter = self.waiting.pop(msisdn, None)
        if waiter is not None and not waiter.called:
            waiter.cancel()                   # the citizen moved on
        answer = self.waiting[msisdn] = defer.Deferred()
        sent = self.factory.inject_pdu(pdu, dialog.system_id)

        def refused(response):
            if response.status != c.ESME_ROK and not answer.called:
                self.waiting.pop(msisdn, None)
                answer.errback(ValueError(f"deliver_sm refused with status "
                                          f"0x{response.status:08X}"))
        sent.addCallbacks(refused, lambda failure: answer.called or answer.errback(failure))
        return answer

    def _pdu(self, msisdn, dialog, text, op, end=False):
        data_coding, payload = encode_text(text) if text else (0, b"")
        if len(payload) > 254:
            raise ValueError("USSD text too long for one PDU")
        pdu = PDU(c.DELIVER_SM, fields={
            "service_type": "USSD", "source_addr_ton": 1, "source_addr_npi": 1,
            "source_addr": msisdn, "dest_addr_ton": 0, "dest_addr_npi": 0,
            "destination_addr": dialog.destination, "data_coding": data_coding,
            "short_message": payload})
        if not isinstance(op, int) or not 0 <= op <= 255:
            raise ValueError("op must be an integer 0..255")
        pdu.set_tlv(c.TLV_USSD_SERVICE_OP, bytes((op,)))
        if dialog.number is not None:
            dialog.sequence = (dialog.sequence + 1) & 0x7F
            its = (dialog.number << 8) | (dialog.sequence << 1) | (1 if end else 0)
            pdu.set_tlv(c.TLV_ITS_SESSION_INFO, its.to_bytes(2, "big"))
        return pdu

    def _remember(self, msisdn, dialog):
        self.dialogs.pop(msisdn, None)
        self.dialogs[msisdn] = dialog
        while len(self.dialogs) > MAX_MSISDNS:
            self.dialogs.popitem(last=False)

    # -- the ESME's answers ---------------------------------------------------------------

    def answered(self, pdu):
        """A submit_sm / data_sm carrying ussd_service_op, accepted by the SMSC."""
        msisdn = pdu.fields.get("destination_addr", "")
        op = pdu.tlvs.get(c.TLV_USSD_SERVICE_OP, b"\x00")
        its = pdu.tlvs.get(c.TLV_ITS_SESSION_INFO)
        its = int.from_bytes(its, "big") if its and len(its) == 2 else None
        body = pdu.fields.get("short_message") or pdu.tlvs.get(c.TLV_MESSAGE_PAYLOAD, b"")
        try:
            text = decode_payload(bytes(body), pdu.fields.get("data_coding", 0))
        except ValueError:
            text = None
        op = op[0] if op else None
        end = op == c.USSD_PSSR_RESPONSE or (its is not None and bool(its & 1))
        answer = {"text": text, "op": op, "its_session_info": its, "end": end,
                  "source_addr": pdu.fields.get("source_addr", "")}
        if end:
            self.dialogs.pop(msisdn, None)
        waiter = self.waiting.pop(msisdn, None)
        if waiter is not None and not waiter.called:
            waiter.callback(answer)
            return
        kept = self.answers.pop(msisdn, None) or deque(maxlen=KEPT_ANSWERS)
        kept.append(answer)
        self.answers[msisdn] = kept
        while len(self.answers) > MAX_MSISDNS:
            self.answers.popitem(last=False)

    def last(self, msisdn):
        return list(self.answers.get(msisdn, ()))
