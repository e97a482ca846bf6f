"""What an inbound deliver_sm / data_sm is, and who takes it: an ordered table.

Each entry has `matches(inbound) -> bool` (cheap: no decoding) and `handle(inbound) ->
Deferred[command_status]`; the first that matches takes the PDU, and the session answers
with that status once it fires (after the store has committed what came in). The order:

  receipt       esm_class marks a delivery receipt (the hot path: checked first)
  ussd          carries ussd_service_op (a USSD dialog step, whatever its address)
  authenticity  to the 4040 root number: a citizen asking whether a text is genuine
  agency        to an agency's number (or one under it): a citizen's reply
  unrouted      anything else, kept for admins

The last three are a citizen's SMS: each part goes through the intake (intake.py: kept
durably, then made whole) and the whole message, a MobileOriginated, is routed by its
number: 4040 → `authenticity.handle(mo)` (the desk, given by `use_authenticity`; until
then the message is filed in the unrouted box, so nothing is lost); an agency's number →
its keywords (HELP, STOP) or else its inbox; anything else → the unrouted box. USSD
steps go to the dialogs (inbound/ussd.py, given by `use_ussd`). A PDU the intake cannot
read is kept raw (store.store_inbound).
"""

from twisted.internet import defer

from gateway.inbound.intake import CitizenIntake
from gateway.inbound.keywords import Keywords
from gateway.inbound.owners import ROOT_NUMBER, NumberOwners
from gateway.inbound.receipts import Receipts
from gateway.inbound.record import Inbound
from gateway.inbound.ussd import UssdRequests
from gateway.model import InboxEntry

_new_tuple = tuple.__new__


class _CitizensSMS:
    """An entry whose PDUs are parts of a citizen's SMS: taken by the intake."""

    def __init__(self, intake):
        self.intake = intake

    def handle(self, inbound):
        return self.intake.take(inbound)


class AuthenticityChecks(_CitizensSMS):
    name = "authenticity"

    def matches(self, inbound):
        return inbound.pdu.fields.get("destination_addr") == ROOT_NUMBER


class AgencyReplies(_CitizensSMS):
    name = "agency"

    def __init__(self, intake, owners):
        super().__init__(intake)
        self.owners = owners

    def matches(self, inbound):
        return self.owners.owner(inbound.pdu.fields.get("destination_addr", "")) is not None


class Unrouted(_CitizensSMS):
    name = "unrouted"

    def matches(self, inbound):
        return True


def inbox_entry(mo, agency_id):
    """The inbox entry of a whole SMS (agency_id None: the unrouted box)."""
    return InboxEntry(agency=agency_id, number=mo.destination, citizen=mo.citizen,
                      text=mo.text, channel="sms", received_at=mo.received_at,
                      operator=mo.operator, partial=mo.partial, source_key=mo.source_key)


class FileAsUnrouted:
    """The 4040 hook's default, until the authenticity desk plugs in: the citizen's
    message is kept in the unrouted box (admins see it), never lost."""

    def __init__(self, inbox):
        self.inbox = inbox

    def handle(self, mo):
        return self.inbox.file(inbox_entry(mo, None))


class InboundClassifier:
    """The OperatorPools' inbound handler: builds the Inbound record and hands it to the
    first entry of `table` that matches."""

    def __init__(self, store, clock, receipt_ids=None, response_timeouts=None,
                 agencies=(), inbox=None, **intake_bounds):
        """receipt_ids / response_timeouts: per operator, see receipts.Receipts;
        agencies: the configured Agency records (whose numbers are theirs); inbox: the
        gateway.inbox.filing.Inbox citizens' messages are filed into; intake_bounds:
        CitizenIntake's timeout_s, max_open_sets, max_open_parts."""
        self.store = store
        self.clock = clock
        self.inbox = inbox
        self.outbound = None
        # The 4040 hook: an object with handle(mo: MobileOriginated) -> Deferred.
        self.authenticity = FileAsUnrouted(inbox)
        self.keywords = Keywords(store, clock, lambda: self.outbound)
        self.intake = CitizenIntake(store, clock, self.route, **intake_bounds)
        self.receipts = Receipts(store, clock, receipt_ids, response_timeouts)
        self.agency_replies = AgencyReplies(self.intake, NumberOwners(agencies))
        self._agencies = {agency.id: agency for agency in agencies}
        self.ussd = UssdRequests(store, clock)
        self.table = (self.receipts, self.ussd, AuthenticityChecks(self.intake),
                      self.agency_replies, Unrouted(self.intake))

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
        self._agencies = {agency.id: agency for agency in agencies}

    def start(self):
        """The intake's sweep (partial sets, sets a crash left): after the store opens."""
        self.intake.start()

    def stop(self):
        self.intake.stop()

    def received(self, operator, session, pdu):
        """OperatorPool's inbound_handler(operator, session, pdu) -> Deferred[int] (or
        ANSWERED_LATER for a receipt: gateway.inbound.receipts)."""
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

    # -- a whole citizen's SMS ------------------------------------------------------------

    def route(self, mo):
        """Handle a whole (or partial) MobileOriginated → Deferred once done and its
        parts settled."""
        settle = [mo.source_key] if mo.source_key is not None else []
        if mo.destination == ROOT_NUMBER:
            return self._then_settle(self.authenticity.handle(mo), settle)
        agency_id = self.agency_replies.owners.owner(mo.destination)
        agency = self._agencies.get(agency_id) if agency_id is not None else None
        if agency is None:
            return self.inbox.file_mo(inbox_entry(mo, None), settle)
        number = max((n for n in agency.numbers if mo.destination.startswith(n)),
                     key=len, default=mo.destination)
        handled = self.keywords.handle(mo, agency, number)
        if handled is not None:
            return self._then_settle(handled, settle)
        return self.inbox.file_mo(inbox_entry(mo, agency.id), settle)

    def _then_settle(self, d, settle):
        if not isinstance(d, defer.Deferred):
            d = defer.succeed(d)
        if settle:
            d.addCallback(lambda _: self.store.settle_mo_sets(settle))
        return d
