"""Citizens' SMS intake: each part kept durably before its deliver_sm_resp, sets made
whole, and each whole message handed on once.

A part is committed to the store (`mo_parts`, migration 10) before the session answers
it, so an acknowledged part survives a crash; a redelivered part (same set and number,
the same body) is recognised there and answered without being kept twice. When a part
completes its set, the whole message (a MobileOriginated, decoded) goes to `route(mo)`,
whose Deferred fires once it is handled (filed, answered); the set is then settled.
Parts of a set may come in any order and on any bind of the operator.

A set still incomplete `timeout_s` after its first part is released as partial (never
dropped), by a sweep on the injected clock that also picks up complete sets a crash
left unsettled. Bounds: a citizen holds at most `max_open_sets` incomplete sets per
operator (the oldest beyond are released partial at once), all citizens together at
most `max_open_parts` parts (the oldest sets beyond are released at the next sweep),
and a part at most mo_read.MAX_PART_OCTETS; 255 parts per set by the format itself.
"""

import logging

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from gateway import metrics
from gateway.inbound.mo_read import Unreadable, decode_set, read_part
from gateway.inbound.raw import keep_raw
from gateway.inbound.record import MobileOriginated
from gateway.numbers import mask_msisdn
from gateway.smpp import constants as c
from gateway.smpp.ratelog import RateLimitedLog

log = logging.getLogger("payam.inbound.intake")

REASSEMBLY_TIMEOUT_S = 300.0     # an incomplete set is released as partial after this
DUPLICATE_WINDOW_S = 600.0       # a settled set's parts are remembered this long
MAX_OPEN_SETS = 8                # incomplete sets per citizen and operator
MAX_OPEN_PARTS = 100_000         # parts of incomplete sets held, all citizens
SWEEP_S = 5.0                    # how often stale sets are looked for
SWEEP_BATCH = 500                # sets released per sweep at most
UNSETTLED_GRACE_S = 30.0         # a complete set not settled by then is handled again


class CitizenIntake:
    def __init__(self, store, clock, route, *, timeout_s=REASSEMBLY_TIMEOUT_S,
                 max_open_sets=MAX_OPEN_SETS, max_open_parts=MAX_OPEN_PARTS):
        """route(mo: MobileOriginated) -> Deferred, fired once the message is handled
        (it settles the set: mo.source_key is the set's id)."""
        self.store = store
        self.clock = clock
        self.route = route
        self.timeout_s = timeout_s
        self.max_open_sets = max_open_sets
        self.max_open_parts = max_open_parts
        self._handling = set()          # set ids handed to route, not yet settled
        self._said = RateLimitedLog(log, clock)    # lines a peer can make us repeat
        self._sweeper = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self):
        if self._sweeper is None:
            self._sweeper = LoopingCall(self.sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(SWEEP_S, now=True).addErrback(
                lambda f: log.error("MO sweep stopped: %s", f.getErrorMessage()))

    def stop(self):
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None

    # -- a PDU -------------------------------------------------------------------------

    def take(self, inbound):
        """Deferred[command_status] once the part is durable (or kept raw)."""
        try:
            part = read_part(inbound)
        except Unreadable as error:
            self._said.log(logging.INFO, (inbound.operator, "unreadable"),
                           "MO from %s on %s not readable (%s): kept raw",
                           mask_msisdn(inbound.pdu.fields.get("source_addr", "")),
                           inbound.operator, error)
            return keep_raw(self.store, inbound)
        metrics.child(metrics.INBOUND, inbound.operator, "mo").inc()
        d = self.store.keep_mo_part(part, inbound.received_at - DUPLICATE_WINDOW_S,
                                    self.max_open_sets)
        d.addCallback(self._kept, inbound.session, inbound.operator)
        return d

    def _kept(self, result, session, operator):
        new, whole, overflow = result
        if not new:
            metrics.child(metrics.INBOUND, operator, "mo_duplicate").inc()
        for mo_set in overflow:
            self._release(mo_set, None)
        if whole is not None:
            self._release(whole, session)
        return c.ESME_ROK

    # -- a whole (or partial) message ----------------------------------------------------

    def _release(self, mo_set, session):
        if mo_set.set_id in self._handling:
            return
        first = mo_set.parts[0]
        total = max(part.total for part in mo_set.parts)
        mo = MobileOriginated(
            operator=first.operator, session=session, citizen=first.citizen,
            destination=first.destination, text=decode_set(mo_set.parts, total),
            received_at=min(part.received_at for part in mo_set.parts),
            partial=not mo_set.complete, source_key=mo_set.set_id)
        if not mo_set.complete:
            self._said.log(logging.INFO, (first.operator, "partial"),
                           "MO from %s to %s released partial: %d of %d parts",
                           mask_msisdn(first.citizen), mask_msisdn(first.destination),
                           len(mo_set.parts), total)
        self._handling.add(mo_set.set_id)
        try:
            d = self.route(mo)
        except Exception:
            d = defer.fail()
        d.addErrback(lambda f: self._said.log(
            logging.ERROR, (first.operator, "not handled"),
            "MO from %s not handled yet (retried by the sweep): %s",
            mask_msisdn(first.citizen), f.getErrorMessage()))
        d.addBoth(lambda _: self._handling.discard(mo_set.set_id))
        return d

    def sweep(self):
        """Release what waited too long; forget settled parts past the duplicate window."""
        now = self.clock.seconds()
        d = self.store.stale_mo_sets(now - self.timeout_s, now - UNSETTLED_GRACE_S,
                                     SWEEP_BATCH + len(self._handling), self.max_open_parts)
        d.addCallback(self._release_stale)
        d.addCallback(lambda _: self.store.forget_mo_parts(now - DUPLICATE_WINDOW_S))
        d.addErrback(lambda f: log.error("MO sweep failed: %s", f.getErrorMessage()))
        return d

    def _release_stale(self, sets):
        for mo_set in sets:
            self._release(mo_set, None)
