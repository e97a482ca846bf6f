"""What an inbound deliver_sm / data_sm is, and who takes it: an ordered table.

Each entry has `matches(inbound) -> bool` (cheap: no decoding) and `handle(inbound) ->
Deferred[command_status]`; the first that matches takes the PDU, and the session answers
with that status once it fires (after the store has committed what came in). The order:

  receipt       esm_class marks a delivery receipt (the hot path: checked first)
  ussd          carries ussd_service_op (a USSD dialog step, whatever its address)
  authenticity  to the 4040 root number: a citizen asking whether a text is genuine
  agency        to an agency's number (or one under it): a citizen's reply
  unrouted      anything else, kept for admins

Receipts, 4040 checks (given a desk, `use_authenticity`) and USSD (inbound/ussd.py, once
the composition root hands it the dialogs: use_ussd) have behaviour; the others keep the
PDU raw (store.store_inbound), for the correspondence issue to fill in.
"""

from gateway.inbound.owners import ROOT_NUMBER, NumberOwners
from gateway.inbound.raw import keep_raw
from gateway.inbound.receipts import Receipts
from gateway.inbound.record import Inbound, MobileOriginated
from gateway.inbound.ussd import UssdRequests
from gateway.numbers import InvalidNumber, normalize_msisdn
from gateway.smpp import constants as c
from gateway.text import decode_short_message

_new_tuple = tuple.__new__


class _KeptRaw:
    """An entry whose feature is still to come: what it takes is kept as the raw PDU
    (durably, before the answer), as every MO was before the inbound package."""

    def __init__(self, store):
        self.store = store

    def handle(self, inbound):
        return keep_raw(self.store, inbound)


class AuthenticityChecks(_KeptRaw):
    """An MO to 4040 goes to the classifier's authenticity desk (gateway.authenticity),
    or is kept raw while there is none."""
    name = "authenticity"

    def __init__(self, store, classifier):
        super().__init__(store)
        self.classifier = classifier

    def matches(self, inbound):
        return inbound.pdu.fields.get("destination_addr") == ROOT_NUMBER

    def handle(self, inbound):
        desk = self.classifier.authenticity
        mo = single_part_mo(inbound) if desk is not None else None
        if mo is None:
            return keep_raw(self.store, inbound)
        d = desk.handle(mo)
        d.addCallback(lambda _: c.ESME_ROK)
        return d


def single_part_mo(inbound):
    """A one-part deliver_sm as the MobileOriginated record; None for a part of a
    concatenated one (kept raw). Stands in until the MO intake reassembles parts and
    hands whole messages to the entries (it then replaces this)."""
    fields, tlvs = inbound.pdu.fields, inbound.pdu.tlvs
    payload = tlvs.get(c.TLV_MESSAGE_PAYLOAD) or fields.get("short_message") or b""
    udhi = bool(fields.get("esm_class", 0) & c.ESM_CLASS_UDHI)
    try:
        decoded = decode_short_message(bytes(payload), fields.get("data_coding", 0), udhi)
    except ValueError:
        return None
    if decoded.concat is not None and decoded.concat.total > 1:
        return None
    source = fields.get("source_addr", "")
    try:
        citizen = normalize_msisdn(source)
    except InvalidNumber:
        citizen = source
    return MobileOriginated(inbound.operator, inbound.session, citizen,
                            fields.get("destination_addr", ""), decoded.text,
                            inbound.received_at)


class AgencyReplies(_KeptRaw):
    name = "agency"

    def __init__(self, store, owners):
        super().__init__(store)
        self.owners = owners

    def matches(self, inbound):
        return self.owners.owner(inbound.pdu.fields.get("destination_addr", "")) is not None


class Unrouted(_KeptRaw):
    name = "unrouted"

    def matches(self, inbound):
        return True


class InboundClassifier:
    """The OperatorPools' inbound handler: builds the Inbound record and hands it to the
    first entry of `table` that matches."""

    def __init__(self, store, clock, receipt_ids=None, response_timeouts=None,
                 agencies=(), inbox=None):
        """receipt_ids / response_timeouts: per operator, see receipts.Receipts;
        agencies: the configured Agency records (whose numbers are theirs); inbox: the
        gateway.inbox.filing.Inbox citizens' messages are filed into."""
        self.clock = clock
        self.inbox = inbox
        self.outbound = None
        self.authenticity = None         # the 4040 desk: handle(MobileOriginated)
        self.receipts = Receipts(store, clock, receipt_ids, response_timeouts)
        self.agency_replies = AgencyReplies(store, NumberOwners(agencies))
        self.ussd = UssdRequests(store, clock)
        self.table = (self.receipts, self.ussd, AuthenticityChecks(store, self),
                      self.agency_replies, Unrouted(store))

    def use_outbound(self, outbound):
        """The accept path (gateway.outbound.accept.Outbound) that answers citizens by
        SMS; set once the composition root has built it (it sits downstream of the
        binds that feed this classifier)."""
        self.outbound = outbound

    def use_authenticity(self, desk):
        """The 4040 desk (gateway.authenticity.desk.AuthenticityDesk) whole MOs to 4040
        go to; set by the composition root (it answers through the accept path)."""
        self.authenticity = desk
    def use_ussd(self, dialogs, pools, settings=None):
        """The USSD dialogs (gateway.ussd.dialogs.UssdDialogs) and the pools their
        answers leave by, once built (the pools are built over this classifier);
        settings: {operator: UssdSettings}."""
        self.ussd.use(dialogs, pools, settings)

    def update_agencies(self, agencies):
        """SIGHUP: whose numbers are whose, anew (one assignment: an MO sees the old
        owners or the new ones)."""
        self.agency_replies.owners = NumberOwners(agencies)

    def received(self, operator, session, pdu):
        """OperatorPool's inbound_handler(operator, session, pdu) -> Deferred[int]."""
        # Built as the tuple it is: a NamedTuple's own __new__ is one more Python call
        # per deliver_sm (the receipts' hot path).
        inbound = _new_tuple(Inbound, (operator, session, pdu, self.clock.seconds()))
        for entry in self.table:
            if entry.matches(inbound):
                return entry.handle(inbound)

    def classify(self, inbound):
        """The name of the entry that takes `inbound` (for tests and diagnostics)."""
        for entry in self.table:
            if entry.matches(inbound):
                return entry.name
