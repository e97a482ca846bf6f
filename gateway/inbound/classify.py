"""What an inbound deliver_sm / data_sm is, and who takes it: an ordered table.

Each entry has `matches(inbound) -> bool` (cheap: no decoding) and `handle(inbound) ->
Deferred[command_status]`; the first that matches takes the PDU, and the session answers
with that status once it fires (after the store has committed what came in). The order:

  receipt       esm_class marks a delivery receipt (the hot path: checked first)
  ussd          carries ussd_service_op (a USSD dialog step, whatever its address)
  authenticity  to the 4040 root number: a citizen asking whether a text is genuine
  agency        to an agency's number (or one under it): a citizen's reply
  unrouted      anything else, kept for admins

Only receipts have behaviour yet; the others keep the PDU raw (store.store_inbound),
for the USSD and correspondence issues to fill in.
"""

from gateway.inbound.owners import ROOT_NUMBER, NumberOwners
from gateway.inbound.raw import keep_raw
from gateway.inbound.receipts import Receipts
from gateway.inbound.record import Inbound
from gateway.smpp import constants as c

_new_tuple = tuple.__new__


class _KeptRaw:
    """An entry whose feature is still to come: what it takes is kept as the raw PDU
    (durably, before the answer), as every MO was before the inbound package."""

    def __init__(self, store):
        self.store = store

    def handle(self, inbound):
        return keep_raw(self.store, inbound)


class UssdRequests(_KeptRaw):
    name = "ussd"

    def matches(self, inbound):
        return c.TLV_USSD_SERVICE_OP in inbound.pdu.tlvs


class AuthenticityChecks(_KeptRaw):
    name = "authenticity"

    def matches(self, inbound):
        return inbound.pdu.fields.get("destination_addr") == ROOT_NUMBER


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
        self.receipts = Receipts(store, clock, receipt_ids, response_timeouts)
        self.agency_replies = AgencyReplies(store, NumberOwners(agencies))
        self.table = (self.receipts, UssdRequests(store), AuthenticityChecks(store),
                      self.agency_replies, Unrouted(store))

    def use_outbound(self, outbound):
        """The accept path (gateway.outbound.accept.Outbound) that answers citizens by
        SMS; set once the composition root has built it (it sits downstream of the
        binds that feed this classifier)."""
        self.outbound = outbound

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
