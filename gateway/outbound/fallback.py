"""The email fallback at accept: is it offered, and which address each message gets.

An agency may ask `"fallback": "email"`: a message whose SMS ends failed or expired is
then sent by email (gateway/mail). The address is found here, once, at accept: the
directory's entry when the recipient was addressed by national ID (NewMessage.citizen),
else the directory's answer for the number when the adapter can look numbers up (the
directory file can; the HTTP lookup service cannot). A message without an address is
still accepted for SMS; its email channel is recorded `unavailable`.
"""

import logging

from twisted.internet import defer

from gateway.outbound.errors import FallbackRefused

log = logging.getLogger("payam.outbound")

FALLBACKS = ("email",)


class EmailFallback:
    def __init__(self, directory=None):
        """directory: the citizen directory (gateway/citizens), or None."""
        self.directory = directory

    def find_addresses(self, messages):
        """Sets `fallback_address` on each message that asked for the fallback; a
        Deferred that never fails (a lookup that does leaves the address unknown)."""
        lookups = []
        for message in messages:
            if message.fallback != "email" or message.error is not None:
                continue
            citizen = message.citizen
            if citizen is not None:
                message.fallback_address = citizen.email
                continue
            by_number = getattr(self.directory, "lookup_msisdn", None)
            if by_number is None:
                continue
            try:
                d = by_number(message.recipient)
            except Exception:
                d = defer.fail()
            d.addCallbacks(self._found, self._not_found, callbackArgs=(message,))
            lookups.append(d)
        if not lookups:
            return defer.succeed(None)
        return defer.gatherResults(lookups)

    @staticmethod
    def _found(citizen, message):
        message.fallback_address = citizen.email if citizen is not None else None

    @staticmethod
    def _not_found(failure):
        # The type only: an adapter's message may carry the number it was asked.
        log.warning("directory lookup for an email fallback failed (%s): the message is "
                    "accepted for SMS only", failure.type.__name__)


def check_fallback(fallback, email):
    """Refuse a fallback this gateway cannot send (no `smtp:` configured)."""
    if fallback is None:
        return
    if fallback not in FALLBACKS:
        raise FallbackRefused(f"'fallback' must be one of: {', '.join(FALLBACKS)}")
    if email is None:
        raise FallbackRefused("'fallback': \"email\" is not available: this gateway has "
                              "no mail server configured (smtp: in gateway.yaml)")
