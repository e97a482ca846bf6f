"""Filing a citizen's message into its agency's inbox: the one path every channel takes.

SMS replies (gateway/inbound), USSD requests and partner apps' replies all call
`Inbox.file`; it stores the entry (durably, in_reply_to found by the store) and then
tells whoever listens (the reply webhook's pusher) about what was filed. A listener
never holds up filing: it is called after the commit and its errors are logged, not
raised, so that the caller's answer (deliver_sm_resp, the USSD page) does not wait on it.
"""

import logging

from gateway.numbers import mask_msisdn

log = logging.getLogger("payam.inbox")


class Inbox:
    def __init__(self, store, debug_text_agencies=()):
        """debug_text_agencies: the agencies whose filed messages' text is logged at
        DEBUG (gateway.yaml log.debug_text_agencies; nobody's otherwise)."""
        self.store = store
        self.debug_text_agencies = frozenset(debug_text_agencies)
        self._listeners = []

    def listen(self, callback):
        """callback(InboxMessage) after each message is filed (not on a redelivery of
        one filed already)."""
        self._listeners.append(callback)

    def file(self, entry):
        """→ Deferred[InboxMessage] once durable (the one filed before, for an entry
        whose source_key was filed already)."""
        return self.file_many([entry]).addCallback(lambda filed: filed[0])

    def file_many(self, entries):
        """→ Deferred[list of InboxMessage] once durable (all or none)."""
        d = self.store.file_inbox(list(entries))
        d.addCallback(self._tell)
        return d

    def file_mo(self, entry, set_ids):
        """file(entry), settling the SMS parts it was made of (the intake's sets) in
        the same transaction: → Deferred[InboxMessage]."""
        d = self.store.file_mo([entry], list(set_ids))
        d.addCallback(self._tell)
        return d.addCallback(lambda filed: filed[0])

    def _tell(self, filed):
        # Only messages new to the store go to the listeners: a redelivery was told.
        for message, new in filed:
            if not new:
                continue
            if message.agency in self.debug_text_agencies:
                log.debug("inbox message %s from %s: text %r", message.id,
                          mask_msisdn(message.citizen), message.text,
                          extra={"event": "message_text", "agency": message.agency})
            for callback in self._listeners:
                try:
                    callback(message)
                except Exception:
                    log.exception("inbox listener failed for an inbox message")
        return [message for message, _ in filed]

    def list(self, agency, after=0, limit=100):
        """→ Deferred[list of InboxMessage]: `agency`'s inbox (None: unrouted)."""
        return self.store.list_inbox(agency, after, limit)
