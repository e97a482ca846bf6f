"""Why a submission was refused, as data: every channel words its own answer.

Each refusal carries a message for the sender's developer and, where waiting helps, the
seconds to wait (`retry_after`). The HTTP API maps each class to a contract error code
in one place (gateway.http.errors.api_error); USSD, broadcasts or a Kannel-compatible
endpoint map them their own way.
"""


class Refusal(Exception):
    """A submission not accepted; nothing was stored and no quota was used."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after     # whole seconds, or None when waiting won't help


class SenderRefused(Refusal):
    """The sender is not one of the agency's numbers or masks (audited)."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason               # gateway.policy.senders' fixed reason


class InvalidRecipients(Refusal):
    """Some recipients are not Iranian mobile numbers."""


class TooManyParts(Refusal):
    """The text needs more SMS parts than one message may have."""


class UnsendableText(Refusal):
    """The text cannot be encoded at all (e.g. an unpaired surrogate)."""


class LinkRefused(Refusal):
    """The text links to a host outside the agency's `links` (audited)."""

    def __init__(self, host, message):
        super().__init__(message)
        self.host = host


class OverRate(Refusal):
    """The agency's parts-per-second rate is used up for now."""


class OverQuota(Refusal):
    """The agency's daily quota of parts would be exceeded."""


class Overloaded(Refusal):
    """Too many accepts wait for the store, or the store refused the write."""


class IdempotencyConflict(Refusal):
    """The idempotency key was used within 24 h for another request."""


class InvalidBroadcast(Refusal):
    """A broadcast's own fields are missing or malformed."""


class TooManyRecipients(Refusal):
    """More recipients than one broadcast takes."""


class FallbackRefused(Refusal):
    """The submission asks for a fallback channel this gateway cannot offer."""


class InvalidNationalIds(Refusal):
    """Some recipients given by national_id are not national IDs (shape, check digit)."""


class NoDirectory(Refusal):
    """Recipients given by national_id, and no citizen directory is configured."""


class DirectoryDown(Refusal):
    """The citizen directory could not answer: nothing was stored; retry later."""
