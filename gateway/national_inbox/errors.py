"""Why a partner app's request was refused, as data (the HTTP API names each in
gateway.http.errors, in one place)."""


class CitizenRefusal(Exception):
    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after     # whole seconds, or None when waiting won't help


class IdentityMismatch(CitizenRefusal):
    """The directory does not register this number to this national ID (audited)."""


class DirectoryDown(CitizenRefusal):
    """The directory could not answer, or none is configured: never guessed."""


class MessageNotFound(CitizenRefusal):
    """Not a message sent to this citizen (another citizen's is as absent)."""
