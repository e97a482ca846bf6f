"""TextFingerprint remembers its last few texts' fingerprints: the same answer as
computing it afresh, bounded in count and text length."""

from gateway.text import fingerprint as fp
from gateway.text.fingerprint import TextFingerprint

KEY = b"k" * 32


def test_a_remembered_fingerprint_is_the_one_computed_afresh():
    cached = TextFingerprint(KEY)
    texts = ["اظهارنامه شما ثبت شد", "Payam notice", "Payam  notice ", "x" * 5000]
    first = [cached.of(t) for t in texts]
    again = [cached.of(t) for t in texts]
    fresh = [TextFingerprint(KEY).of(t) for t in texts]
    assert first == again == fresh
    # Texts that normalise alike share a fingerprint; the cache keeps them apart anyway.
    assert cached.of("Payam notice") == TextFingerprint(KEY).of("Payam notice")
    assert TextFingerprint(b"j" * 32).of(texts[0]) != first[0]


def test_the_cache_stays_bounded():
    cached = TextFingerprint(KEY)
    for n in range(1000):
        assert cached.of(f"notice {n}") == TextFingerprint(KEY).of(f"notice {n}")
        assert len(cached._recent) <= fp.CACHE_TEXTS
    cached.of("y" * (fp.CACHE_TEXT_CHARS + 1))
    assert "y" * (fp.CACHE_TEXT_CHARS + 1) not in cached._recent
