"""Delivery receipts: the hot path of inbound traffic, one store write per batch.

Receipts arriving within RECEIPT_GATHER_S share one store.apply_receipts; each one's
deliver_sm_resp waits for that write to commit. While an `auto` operator's id base is
learned, a timer runs one more round of judging once its kept receipts have come of age.
"""

import logging

from twisted.internet.defer import Deferred

from gateway import metrics
from gateway.inbound.raw import keep_raw
from gateway.smpp import constants as c
from gateway.smpp.esme import ANSWERED_LATER
from gateway.smpp.receipt import is_receipt, read_receipt
from gateway.store.receipts import MATURE_S, mature_after

log = logging.getLogger("payam.inbound")

RECEIPT_GATHER_S = 0.002   # receipts arriving within this window share one store write
# While an `auto` operator's id base is learned, its kept receipts are judged as they
# come of age (MATURE_S, or mature_after its response_timeout_s); after its last
# receipt, one more round once they all have.
JUDGE_LATER_S = 1.0
LEARN_AGAIN_S = MATURE_S + JUDGE_LATER_S      # at the default response timeout


def _told(tell, pdu, outcome):
    """Tell a session how its receipt ended; a failure there is logged, as a Deferred's
    unhandled error would be, and the batch's other receipts are still answered."""
    try:
        tell(pdu, outcome)
    except Exception:
        log.exception("answering a receipt (seq %d) failed", pdu.sequence)


def _cork(sessions):
    """The sessions (gateway.smpp.esme.ESMEProtocol) now corked, of those given."""
    corked = []
    for session in sessions:
        cork = getattr(session, "cork", None)     # a test's stand-in may have none
        if cork is not None and cork():
            corked.append(session)
    return corked


class Receipts:
    """The classifier of receipts (esm_class says so) and their batched store writes."""

    name = "receipt"

    def __init__(self, store, clock, receipt_ids=None, response_timeouts=None):
        self.store = store
        self.clock = clock
        # operator → how its receipts write the submit_sm_resp id (raw | dec | hex |
        # auto); the store matches each receipt under exactly that base.
        self.receipt_ids = dict(receipt_ids or {})
        # operator → how old its kept receipts must be to be judged (learning auto).
        self.mature_s = {operator: mature_after(timeout)
                         for operator, timeout in (response_timeouts or {}).items()}
        self._learning = set()    # auto operators whose base is not known yet
        self._learn_call = None
        # [(operator, smsc_id, state, error, deferred or None, session, pdu)]
        self._receipts = []
        self._flush_call = None

    def matches(self, inbound):
        return is_receipt(inbound.pdu)          # the esm_class only: cheap

    def handle(self, inbound):
        receipt = read_receipt(inbound.pdu)     # matches() saw it is one
        if receipt is None:
            # Marked as a receipt but naming no message (read_receipt logged it): kept
            # as it came, like any inbound PDU.
            return keep_raw(self.store, inbound)
        session = inbound.session
        # A session answers its deliver_sm_resp when told (ANSWERED_LATER): a Deferred,
        # its callbacks and their run were ~1.2 µs a receipt.  Others get a Deferred.
        waiting = (None if getattr(session, "answer_inbound", None) is not None
                   else Deferred())
        self._receipts.append((inbound.operator, receipt.smsc_id, receipt.state,
                               receipt.error, waiting, session, inbound.pdu))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(RECEIPT_GATHER_S, self._flush)
        return ANSWERED_LATER if waiting is None else waiting

    def _flush(self):
        self._flush_call = None
        batch, self._receipts = self._receipts, []
        d = self.store.apply_receipts([item[:4] for item in batch], self.receipt_ids,
                                      mature_s=self.mature_s)

        def applied(matched):
            # Metrics counted per label set and added once per batch (hot path).
            counts = {}
            # The batch's deliver_sm_resp leave each session in one write (its cork).
            corked = _cork({item[5] for item in batch})
            try:
                for (operator, _id, state, _error, waiting, session, pdu), hit in zip(
                        batch, matched):
                    labels = (operator, state, "yes" if hit else "later")
                    counts[labels] = counts.get(labels, 0) + 1
                    if waiting is None:
                        _told(session.answer_inbound, pdu, c.ESME_ROK)
                    else:
                        waiting.callback(c.ESME_ROK)
            finally:
                for session in corked:
                    session.uncork()
            for labels, n in counts.items():
                metrics.child(metrics.RECEIPTS, *labels).inc(n)
            self._still_learning({item[0] for item in batch})

        def failed(failure):
            # Not stored: the session answers a temporary error and the SMSC retries.
            log.error("could not store %d receipts: %s", len(batch), failure.getErrorMessage())
            for *_, waiting, session, pdu in batch:
                if waiting is None:
                    _told(session.inbound_failed, pdu, failure)
                else:
                    waiting.errback(failure)

        d.addCallbacks(applied, failed)

    def _still_learning(self, operators):
        """(Re)arm one round of judging for the auto operators not learned yet, due
        when the receipts they just sent have come of age."""
        learning = {operator for operator in operators
                    if self.receipt_ids.get(operator, "auto") == "auto"
                    and self.store.learned_receipt_ids(operator) is None}
        if not learning:
            return
        self._learning |= learning
        delay = JUDGE_LATER_S + max(self.mature_s.get(operator, MATURE_S)
                                    for operator in self._learning)
        if self._learn_call is not None and self._learn_call.active():
            self._learn_call.reset(delay)
        else:
            self._learn_call = self.clock.callLater(delay, self._learn)

    def _learn(self):
        self._learn_call = None
        operators, self._learning = self._learning, set()
        d = self.store.apply_receipts([], self.receipt_ids, learn=sorted(operators),
                                      mature_s=self.mature_s)
        d.addErrback(lambda failure: log.error("could not judge kept receipts: %s",
                                               failure.getErrorMessage()))
