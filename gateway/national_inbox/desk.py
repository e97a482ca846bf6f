"""What a partner app may do for a citizen whose pair (national ID, number) the
directory confirmed: read the messages agencies sent to that number, and reply to one.

Reading: every message the store shows for the number (gateway.store citizen_messages:
single and broadcast messages, any agency; not those never sent, opted out or
cancelled; not the platform's own 4040 answers), newest first, a page at a time.

Replying: the reply answers one message sent to that number (else MessageNotFound, the
same for another citizen's message as for a missing one) and is filed through the
inbox (gateway.inbox: the agency's inbox, its webhook) as that agency's citizen's
message on channel "app", to the number the message came from, in_reply_to that
message.  A retried POST files once: the entry's source_key is a hash of the app, the
number, the message answered, the text and the app's optional idempotency_key, so the
same words to the same message from the same app are one reply unless the app gives
each its own key.
"""

import hashlib

from gateway.model import InboxEntry
from gateway.national_inbox.errors import MessageNotFound

CHANNEL = "app"


def reply_source_key(app_id, msisdn, in_reply_to, text, idempotency_key=None):
    """The inbox source_key of an app's reply: the same request, the same key."""
    material = "\0".join((app_id, msisdn, in_reply_to, idempotency_key or "", text))
    return "app:" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


class NationalInbox:
    def __init__(self, store, inbox, identity, *, clock, hidden_agencies=()):
        """store: MessageStore (citizen_messages, citizen_message); inbox: the Inbox
        replies are filed through; identity: IdentityCheck; hidden_agencies: senders
        that are not agencies (the platform's 4040 answers)."""
        self.store = store
        self.inbox = inbox
        self.identity = identity
        self.clock = clock
        self.hidden_agencies = tuple(hidden_agencies)

    def messages(self, app, national_id, msisdn, before, limit, peer):
        """Deferred[(CitizenMessages newest first, cursor of the next page or None)].
        before: (created_at, id) of the last message of the previous page, or None."""
        d = self.identity.confirm(app, national_id, msisdn, peer)
        d.addCallback(lambda _: self.store.citizen_messages(
            msisdn, before, limit + 1, self.hidden_agencies))
        d.addCallback(_page, limit)
        return d

    def reply(self, app, national_id, msisdn, in_reply_to, text, peer,
              idempotency_key=None):
        """Deferred[InboxMessage] once the reply is durable in the agency's inbox."""
        d = self.identity.confirm(app, national_id, msisdn, peer)
        d.addCallback(lambda _: self.store.citizen_message(msisdn, in_reply_to,
                                                           self.hidden_agencies))
        d.addCallback(self._file, app, msisdn, text, idempotency_key)
        return d

    def _file(self, message, app, msisdn, text, idempotency_key):
        if message is None:
            raise MessageNotFound("no such message was sent to this citizen")
        return self.inbox.file(InboxEntry(
            agency=message.agency, number=message.sender, citizen=msisdn, text=text,
            channel=CHANNEL, received_at=self.clock.seconds(),
            source_key=reply_source_key(app.id, msisdn, message.id, text, idempotency_key),
            in_reply_to=message.id))


def _page(found, limit):
    """One more than `limit` was asked for: whether it came says if a next page exists."""
    page = found[:limit]
    more = len(found) > limit
    return page, ((page[-1].created_at, page[-1].id) if more else None)
