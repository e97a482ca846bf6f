"""API-key authentication: a presented bearer key is hashed and looked up, never compared.

The configuration holds only "sha256:<hex>" of each key, so a leaked agencies file does
not leak keys. Keys are random (>= 128 bits), so one unsalted SHA-256 suffices: there
is nothing to brute-force, and a dict lookup on the digest leaks no timing about the key.
"""

import hashlib
import re
import secrets

HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 256
_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_KEY_LENGTH)   # visible ASCII, no spaces
KEY_BYTES = 32                 # 256 bits of randomness per generated key
# Header values that authenticated, remembered per ring (hash + regex per request were
# ~0.7 of 48 µs per POST in bench/accept_path.py). Bounded: a ring holds few keys, and
# only a value that authenticated is kept, so guesses cannot fill it.
MAX_REMEMBERED = 1024

# One message for every failure: a caller must not learn which part was wrong.
UNAUTHORIZED_MESSAGE = "a valid API key is required: send 'Authorization: Bearer <key>'"


class Unauthorized(Exception):
    """No usable credentials; `reason` is for logs and audit only, never for the caller."""

    def __init__(self, reason):
        super().__init__(UNAUTHORIZED_MESSAGE)
        self.reason = reason


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key():
    """(new key, its "sha256:..." line for the agencies file). The key is URL-safe."""
    key = secrets.token_urlsafe(KEY_BYTES)
    return key, hash_key(key)


class KeyRing:
    """Maps the SHA-256 of every configured key to its holder; swapped whole on reload.

    Agencies have one ring and partner apps another (kind "app"): a key is found only in
    its own ring, so an app key on an agency route is as unknown as a made-up one, and
    the other way round."""

    def __init__(self, holders, kind="agency"):
        self.kind = kind
        self.update(holders)

    def update(self, holders):
        by_digest = {}
        for holder in holders:
            for configured in holder.keys:
                if not configured.startswith(HASH_PREFIX):
                    raise ValueError(f"{self.kind} {holder.id}: key hash must start with "
                                     f"{HASH_PREFIX!r}")
                digest = configured[len(HASH_PREFIX):].lower()
                if digest in by_digest and by_digest[digest].id != holder.id:
                    raise ValueError(f"{self.kind} {by_digest[digest].id} and {holder.id} "
                                     "share an API key")
                by_digest[digest] = holder
        # One assignment: a request sees the old ring or the new one, never half of each.
        # The remembered header values go with the old ring: a removed key stops at once.
        self._by_digest, self._by_header = by_digest, {}
        self.holders = self.agencies = tuple(holders)

    def authenticate(self, authorization):
        """The holder (agency or app) of the bearer key in an Authorization header value,
        or Unauthorized."""
        # A dict lookup of the presented value, like the digest's: its string hash is
        # keyed per process (SipHash), so which bucket a guess lands in, and whether it
        # is compared at all, tells nothing about a configured key.
        remembered = self._by_header
        holder = remembered.get(authorization)
        if holder is not None:
            return holder
        holder = self._look_up(authorization)
        if len(remembered) < MAX_REMEMBERED:
            remembered[authorization] = holder
        return holder

    def _look_up(self, authorization):
        if not authorization:
            raise Unauthorized("missing Authorization header")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("not a Bearer credential")
        key = key.strip()
        if not _KEY_SHAPE.fullmatch(key):
            raise Unauthorized("malformed key")
        holder = self._by_digest.get(hashlib.sha256(key.encode("utf-8")).hexdigest())
        if holder is None:
            raise Unauthorized("unknown key")
        return holder
