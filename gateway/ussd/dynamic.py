"""Dynamic states: the agency's HTTP endpoint writes the page.

POST {url} with JSON `{"agency", "code", "msisdn", "language", "values": {...}}` →
`{"text": "...", "end": true|false}`. Whatever goes wrong (a timeout, default 2 s, a
refused connection, a non-2xx answer, a body over 16 KiB, not that JSON) answers None and
the menu shows the state's fallback text: a slow or broken agency never hangs a dialog,
nor the reactor (treq is asynchronous; the timeout cancels the request). At most
MAX_IN_FLIGHT calls at once: beyond them the fallback at once.
"""

import json
import logging

from twisted.internet import defer

from gateway.numbers import mask_msisdn

log = logging.getLogger("payam.ussd.dynamic")

MAX_BODY = 16 * 1024
MAX_TEXT = 1000
MAX_IN_FLIGHT = 500


class BodyTooLarge(Exception):
    pass


class DynamicStates:
    def __init__(self, reactor, *, http=None, max_in_flight=MAX_IN_FLIGHT):
        """http: an object with treq's `post` and `collect` (treq itself by default)."""
        if http is None:
            import treq as http
        from twisted.web.client import HTTPConnectionPool
        self.reactor = reactor
        self.http = http
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 10
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def fetch(self, state, dialog, *, agency, code, msisdn):
        """→ Deferred[(text, end) | None]; never fails."""
        if self.in_flight >= self.max_in_flight:
            log.warning("dynamic state %s: %d calls in flight already, fallback shown",
                        state.name, self.in_flight)
            return defer.succeed(None)
        payload = {"agency": agency, "code": code, "msisdn": msisdn,
                   "language": dialog.language, "values": dict(dialog.values)}
        self.in_flight += 1
        d = defer.maybeDeferred(
            self.http.post, state.url, data=json.dumps(payload, ensure_ascii=False)
            .encode("utf-8"), headers={"Content-Type": ["application/json; charset=utf-8"]},
            reactor=self.reactor, pool=self.pool)
        d.addCallback(self._read)
        d.addTimeout(state.timeout_s, self.reactor)
        d.addCallback(_parse)
        d.addErrback(self._failed, state, msisdn)

        def done(result):
            self.in_flight -= 1
            return result
        d.addBoth(done)
        return d

    def close(self):
        """Close the kept-alive connections (at shutdown) → Deferred."""
        return self.pool.closeCachedConnections()

    def _read(self, response):
        if not 200 <= response.code < 300:
            raise ValueError(f"HTTP {response.code}")
        length = response.length
        if isinstance(length, int) and length > MAX_BODY:
            raise BodyTooLarge(f"body of {length} octets")
        chunks, size = [], [0]

        def collect(data):
            size[0] += len(data)
            if size[0] > MAX_BODY:
                raise BodyTooLarge(f"body over {MAX_BODY} octets")
            chunks.append(data)
        return self.http.collect(response, collect).addCallback(lambda _: b"".join(chunks))

    def _failed(self, failure, state, msisdn):
        reason = "timed out" if failure.check(defer.TimeoutError, defer.CancelledError) \
            else failure.getErrorMessage() or failure.type.__name__
        log.warning("dynamic state %s for %s: %s; fallback shown", state.name,
                    mask_msisdn(msisdn), reason[:200])
        return None


def _parse(body):
    document = json.loads(body.decode("utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("text"), str):
        raise ValueError("the answer is not {\"text\": ..., \"end\": ...}")
    text = document["text"].strip()
    end = document.get("end", True)
    if not text or not isinstance(end, bool):
        raise ValueError("empty text, or an end that is not true/false")
    try:
        text.encode("utf-16-be")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode") from None
    return text[:MAX_TEXT], end
