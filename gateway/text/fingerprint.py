"""A sent text's fingerprint: HMAC-SHA256 of its normal form (normalise.py) under a
per-installation key, cut to 128 bits.

What the authenticity check keeps per message instead of the text: it answers "was this
text sent to this citizen?" and nothing else. Without the key (kept in the store's
`meta`, made at its creation) a fingerprint cannot be tested against guessed texts; 128
bits make an accidental match between two different texts impossible in practice.
"""

import hashlib
import hmac

from gateway.text.normalise import normalise_for_check

DIGEST_BYTES = 16
KEY_BYTES = 32
# An agency often sends one notice to many citizens in separate requests: the last few
# texts' fingerprints are remembered (normalising and the HMAC were ~7 % of the HTTP
# accept path's CPU, bench/accept_path.py). Bounded in count and in each text's length,
# emptied whole when full; keyed by the text itself, never by a shorter hash.
CACHE_TEXTS = 64
CACHE_TEXT_CHARS = 2000


class TextFingerprint:
    def __init__(self, key):
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError("a fingerprint key is at least 16 random bytes")
        self._key = hmac.new(key, digestmod=hashlib.sha256)   # copied per text: cheaper
        self._recent = {}

    def of(self, text):
        """The fingerprint of `text` (normalised first)."""
        recent = self._recent
        digest = recent.get(text)
        if digest is None:
            digest = self.of_normal(normalise_for_check(text))
            if len(text) <= CACHE_TEXT_CHARS:
                if len(recent) >= CACHE_TEXTS:
                    recent.clear()
                recent[text] = digest
        return digest

    def of_normal(self, normal):
        """The fingerprint of a text already in normal form."""
        mac = self._key.copy()
        mac.update(normal.encode("utf-8", "surrogatepass"))
        return mac.digest()[:DIGEST_BYTES]
