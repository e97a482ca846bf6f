"""The directory seam: every adapter answers `lookup(national_id)` with a Deferred that
fires with the Citizen or None (not registered), or fails with DirectoryUnavailable —
the caller answers 503 then, it never guesses. `confirms(msisdn, national_id)` is the
identity check a partner app's request must pass (Shahkar: does this number belong to
this national ID).

The embedded default is FileDirectory, the citizens of `directory.yaml` held in memory;
the production one asks a lookup service over HTTP (gateway/citizens/http_directory.py).
"""

from twisted.internet import defer


class DirectoryUnavailable(Exception):
    """The directory could not answer (down, slow, malformed answer): retry later."""


class FileDirectory:
    """The citizens of a directory file (config: `directory: {path: ...}`), by national ID."""

    def __init__(self, citizens):
        self.update(citizens)

    def lookup(self, national_id):
        return defer.succeed(self._by_id.get(national_id))

    def lookup_msisdn(self, msisdn):
        """The citizen registered to a number (a file can answer it; a lookup service by
        national ID cannot, and has no such method)."""
        return defer.succeed(self._by_msisdn.get(msisdn))

    def update(self, citizens):
        """SIGHUP: the file read anew."""
        citizens = tuple(citizens)
        self._by_id = {citizen.national_id: citizen for citizen in citizens}
        self._by_msisdn = {citizen.msisdn: citizen for citizen in citizens}

    def __len__(self):
        return len(self._by_id)


def confirms(directory, msisdn, national_id):
    """Deferred[bool]: the directory registers `msisdn` to `national_id`."""
    d = directory.lookup(national_id)
    d.addCallback(lambda citizen: citizen is not None and citizen.msisdn == msisdn)
    return d
