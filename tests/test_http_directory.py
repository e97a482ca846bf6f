"""The production directory adapter (gateway/citizens/http_directory.py) against a lookup
service on 127.0.0.1: found, not registered, every way of not answering (each one
DirectoryUnavailable, never a guess), the cache and its TTL on a Clock, one request for
concurrent lookups of one ID, the bound on requests in flight, and no national ID in a
log line."""

import json
import logging

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web import resource, server

from gateway import metrics
from gateway.citizens.cache import MISSING, AnswerCache
from gateway.citizens.directory import DirectoryUnavailable
from gateway.citizens.http_directory import MAX_BODY, HttpDirectory
from gateway.config.schema import DirectorySettings
from gateway.model import Citizen
from gateway.national_id import check_digit

NID = "0012345679"
OTHER = "1234567891"
FOUND = json.dumps({"msisdn": "09121234567", "email": "citizen1@example.ir"}).encode()


def national_id(n):
    """The n-th valid national ID of an invented series."""
    first = f"{100000000 + n:09d}"
    return first + str(check_digit(first))


class FakeShahkar(resource.Resource):
    """GET /shahkar/citizens/{id}: `answers[id]` is (status, body), "hold" (answered by
    release()), "silent" (never answered) or "trickle" (a chunked body over the cap);
    an ID not listed is 404."""
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.answers = {}
        self.asked = []
        self.held = []
        self.silent = []

    def render_GET(self, request):
        path = request.path.decode()
        self.asked.append(path)
        answer = self.answers.get(path.rsplit("/", 1)[-1], (404, b'{"error": "unknown"}'))
        request.setHeader(b"content-type", b"application/json")
        if answer == "hold":
            self.held.append(request)
            return server.NOT_DONE_YET
        if answer == "silent":
            self.silent.append(request)
            request.notifyFinish().addErrback(lambda _: None)
            return server.NOT_DONE_YET
        if answer == "trickle":             # no Content-Length: the cap is met while reading
            for _ in range(3):
                request.write(b" " * (MAX_BODY // 2))
            request.write(FOUND)
            request.finish()
            return server.NOT_DONE_YET
        status, body = answer[:2]
        request.setResponseCode(status)
        for name, value in answer[2:]:
            request.setHeader(name, value)
        return body

    def release(self, body=FOUND):
        held, self.held = self.held, []
        for request in held:
            request.write(body)
            request.finish()


class LoopbackDirectory(unittest.TestCase):
    timeout = 15

    def setUp(self):
        self.shahkar = FakeShahkar()
        self.port = reactor.listenTCP(0, server.Site(self.shahkar), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/shahkar"

    def directory(self, **settings):
        options = {key: settings.pop(key) for key in ("clock", "max_in_flight")
                   if key in settings}
        directory = HttpDirectory(DirectorySettings(url=self.url, **settings), reactor,
                                  **options)
        # Closed a turn later: a connection the failing read dropped may still be parked
        # in the pool by the parser that delivered the rest of its buffer.
        self.addCleanup(lambda: task.deferLater(reactor, 0, directory.close))
        return directory

    @defer.inlineCallbacks
    def unavailable(self, directory, national_id=NID):
        try:
            yield directory.lookup(national_id)
        except DirectoryUnavailable as error:
            return str(error)
        raise AssertionError("the lookup answered instead of failing DirectoryUnavailable")

    # -- answers ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_registered_citizen_is_found_with_the_number_normalised(self):
        self.shahkar.answers[NID] = (200, FOUND)
        citizen = yield self.directory().lookup(NID)
        assert citizen == Citizen(national_id=NID, msisdn="989121234567",
                                  email="citizen1@example.ir")
        assert self.shahkar.asked == [f"/shahkar/citizens/{NID}"]

    @defer.inlineCallbacks
    def test_persian_digits_are_asked_as_ascii_and_an_email_is_optional(self):
        self.shahkar.answers[NID] = (200, b'{"msisdn": "989121234567"}')
        citizen = yield self.directory().lookup("۰۰۱۲۳۴۵۶۷۹")
        assert (citizen.msisdn, citizen.email) == ("989121234567", None)
        assert self.shahkar.asked == [f"/shahkar/citizens/{NID}"]

    @defer.inlineCallbacks
    def test_404_is_not_registered(self):
        assert (yield self.directory().lookup(NID)) is None

    @defer.inlineCallbacks
    def test_an_invalid_national_id_is_never_put_in_a_url(self):
        directory = self.directory()
        for value in ("0012345678", "../../admin", "0012345679/../x", "1111111111", 12):
            assert (yield directory.lookup(value)) is None
        assert self.shahkar.asked == []

    # -- every way of not answering --------------------------------------------------------

    @defer.inlineCallbacks
    def test_a_5xx_or_429_is_unavailable_and_not_cached(self):
        directory = self.directory()
        for status in (500, 503, 429, 400):
            self.shahkar.answers[NID] = (status, b'{"error": "busy"}')
            assert f"HTTP {status}" in (yield self.unavailable(directory))
        assert len(self.shahkar.asked) == 4          # a failure is asked again each time
        self.shahkar.answers[NID] = (200, FOUND)
        assert (yield directory.lookup(NID)).msisdn == "989121234567"

    @defer.inlineCallbacks
    def test_a_redirect_is_not_followed(self):
        # The national ID is in the URL: it goes to the configured service only.
        self.shahkar.answers[NID] = (302, b"", (b"location", f"{self.url}/citizens/{OTHER}"))
        self.shahkar.answers[OTHER] = (200, FOUND)
        assert "HTTP 302" in (yield self.unavailable(self.directory()))
        assert self.shahkar.asked == [f"/shahkar/citizens/{NID}"]

    @defer.inlineCallbacks
    def test_malformed_answers_are_unavailable_never_a_guess(self):
        directory = self.directory()
        for body, said in [
                (b"<html>hello</html>", "not JSON"),
                (b'{"msisdn": "0912', "not JSON"),
                (b"\xff\xfe{}", "not JSON"),
                (b'["09121234567"]', "not a JSON object"),
                (b"{}", "msisdn"),
                (b'{"msisdn": 9121234567}', "msisdn"),
                (b'{"msisdn": "02112345678"}', "msisdn"),        # a landline
                (b'{"msisdn": "+4479460000"}', "msisdn"),        # not Iranian
                (b'{"msisdn": "09121234567", "email": 7}', "email"),
                (b'{"msisdn": "09121234567", "email": "no at sign"}', "email")]:
            self.shahkar.answers[NID] = (200, body)
            assert said in (yield self.unavailable(directory)), body

    @defer.inlineCallbacks
    def test_a_body_over_the_cap_is_unavailable(self):
        directory = self.directory()
        self.shahkar.answers[NID] = (200, FOUND[:-1] + b', "x": "' + b"a" * MAX_BODY + b'"}')
        assert f"over {MAX_BODY} octets" in (yield self.unavailable(directory))
        self.shahkar.answers[NID] = "trickle"
        assert f"over {MAX_BODY} octets" in (yield self.unavailable(directory))

    @defer.inlineCallbacks
    def test_a_service_that_never_answers_is_unavailable_after_the_timeout(self):
        self.shahkar.answers[NID] = "silent"
        reason = yield self.unavailable(self.directory(timeout_s=0.3))
        assert "no answer within 0.3 s" in reason
        [request] = self.shahkar.silent       # and the connection was given up
        yield self._lost(request)

    def _lost(self, request):
        from conftest import wait_until
        return wait_until(reactor, lambda: request.channel is None
                          or request.channel.transport is None
                          or request.channel.transport.disconnected)

    @defer.inlineCallbacks
    def test_a_refused_connection_is_unavailable(self):
        yield self.port.stopListening()
        reason = yield self.unavailable(self.directory())
        assert "ConnectionRefused" in reason

    # -- cache, coalescing, bound ----------------------------------------------------------

    @defer.inlineCallbacks
    def test_answers_are_kept_for_the_ttl_of_the_injected_clock(self):
        clock = task.Clock()
        directory = self.directory(clock=clock, cache_ttl_s=60)
        self.shahkar.answers[NID] = (200, FOUND)
        first = yield directory.lookup(NID)
        assert (yield directory.lookup(NID)) == first            # found: kept
        assert (yield directory.lookup(OTHER)) is None
        assert (yield directory.lookup(OTHER)) is None           # not registered: kept too
        assert len(self.shahkar.asked) == 2
        clock.advance(59)
        yield directory.lookup(NID)
        assert len(self.shahkar.asked) == 2
        clock.advance(1)                                         # the TTL is over
        yield directory.lookup(NID)
        yield directory.lookup(OTHER)
        assert len(self.shahkar.asked) == 4

    @defer.inlineCallbacks
    def test_concurrent_lookups_of_one_id_share_one_request(self):
        from conftest import wait_until
        directory = self.directory()
        self.shahkar.answers[NID] = "hold"
        first = directory.lookup(NID)
        yield wait_until(reactor, lambda: self.shahkar.held)
        second, third = directory.lookup(NID), directory.lookup(NID)
        third.cancel()                                 # one caller gives up: not the rest
        self.shahkar.release()
        answers = yield defer.gatherResults([first, second])
        assert answers[0] == answers[1] and answers[0].msisdn == "989121234567"
        assert self.shahkar.asked == [f"/shahkar/citizens/{NID}"]
        self.assertFailure(third, defer.CancelledError)
        yield third

    @defer.inlineCallbacks
    def test_beyond_the_bound_in_flight_a_lookup_fails_at_once(self):
        from conftest import wait_until
        directory = self.directory(max_in_flight=2)
        a, b, c = national_id(1), national_id(2), national_id(3)
        for nid in (a, b, c):
            self.shahkar.answers[nid] = "hold"
        pending = [directory.lookup(a), directory.lookup(b)]
        refused = directory.lookup(c)
        assert refused.called                          # at once, no queue
        self.assertFailure(refused, DirectoryUnavailable)
        assert "2 lookups in flight" in str((yield refused))
        yield wait_until(reactor, lambda: len(self.shahkar.held) == 2)
        assert directory.lookup(a) is not None and directory.in_flight == 2   # joins
        self.shahkar.release()
        yield defer.gatherResults(pending)
        assert directory.in_flight == 0
        self.shahkar.answers[c] = (200, FOUND)
        assert (yield directory.lookup(c)).msisdn == "989121234567"

    # -- privacy and metrics ---------------------------------------------------------------

    @defer.inlineCallbacks
    def test_no_national_id_in_a_log_line_or_a_failure(self):
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("payam")
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        directory = self.directory(timeout_s=0.3)
        reasons = []
        for answer in ((500, b"oops " + NID.encode()), (200, b"{"), "silent"):
            self.shahkar.answers[NID] = answer
            reasons.append((yield self.unavailable(directory)))
        yield self.port.stopListening()
        reasons.append((yield self.unavailable(directory)))
        lines = [record.getMessage() for record in records] + reasons
        assert len(records) >= 4
        assert not [line for line in lines if NID in line], lines

    @defer.inlineCallbacks
    def test_metrics_count_each_lookup_by_its_answer(self):
        def count(result):
            return metrics.DIRECTORY_LOOKUPS.labels(result)._value.get()

        def requests():
            return sum(sample.value for sample in metrics.DIRECTORY_SECONDS.collect()[0]
                       .samples if sample.name.endswith("_count"))
        before = {r: count(r) for r in ("found", "unknown", "cached", "unavailable")}
        asked = requests()
        directory = self.directory()
        self.shahkar.answers[NID] = (200, FOUND)
        self.shahkar.answers[national_id(4)] = (502, b"")
        yield directory.lookup(NID)
        yield directory.lookup(NID)
        yield directory.lookup(OTHER)
        yield self.unavailable(directory, national_id(4))
        after = {r: count(r) - before[r] for r in before}
        assert after == {"found": 1, "unknown": 1, "cached": 1, "unavailable": 1}
        assert requests() - asked == 3                # the cached one asked nothing


class _AgentNamingTheUrl:
    """An agent whose every request fails with an error that repeats the URL."""

    def __init__(self):
        self.uris = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        self.uris.append(uri)
        return defer.fail(ValueError(f"cannot reach {uri.decode()}"))


def test_an_error_naming_the_url_is_scrubbed_of_the_national_id(clock, caplog):
    agent = _AgentNamingTheUrl()
    directory = HttpDirectory(DirectorySettings(url="http://shahkar.example/v1"), clock,
                              agent=agent)
    failures = []
    directory.lookup(NID).addErrback(failures.append)
    [failure] = failures
    assert agent.uris == [f"http://shahkar.example/v1/citizens/{NID}".encode()]
    assert failure.check(DirectoryUnavailable)
    assert "cannot reach http://shahkar.example/v1/citizens/********79" in str(failure.value)
    assert NID not in str(failure.value) and NID not in caplog.text
    assert "********79" in caplog.text


class _AgentNeverAnswering:
    def __init__(self):
        self.asked = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = defer.Deferred()
        self.asked.append(d)
        return d


def test_lookups_waiting_on_one_request_are_bounded_too(clock):
    agent = _AgentNeverAnswering()
    directory = HttpDirectory(DirectorySettings(url="http://shahkar.example", timeout_s=2),
                              clock, agent=agent, max_waiting=3)
    waiting = [directory.lookup(NID) for _ in range(3)]
    refused = directory.lookup(NID)
    failures = []
    refused.addErrback(failures.append)
    assert [f.type for f in failures] == [DirectoryUnavailable] and len(agent.asked) == 1
    for d in waiting:
        d.addErrback(failures.append)
    clock.advance(2)                        # the one request times out: all three fail
    assert [f.type for f in failures] == [DirectoryUnavailable] * 4
    assert "no answer within 2 s" in str(failures[-1].value)
    assert directory.in_flight == 0


# -- the cache on its own ------------------------------------------------------------------

def test_the_cache_holds_at_most_its_size_oldest_going_first(clock):
    cache = AnswerCache(ttl_s=60, size=2, clock=clock)
    for nid in (national_id(1), national_id(2), national_id(3)):
        cache.put(nid, None)
    assert cache.get(national_id(1)) is MISSING
    assert cache.get(national_id(2)) is None and cache.get(national_id(3)) is None
    assert len(cache) == 2


def test_a_cache_of_size_zero_keeps_nothing(clock):
    cache = AnswerCache(ttl_s=60, size=0, clock=clock)
    cache.put(NID, None)
    assert cache.get(NID) is MISSING and len(cache) == 0


def test_the_service_builds_the_http_directory_for_a_url(clock):
    from types import SimpleNamespace

    from gateway.service import build_directory
    config = SimpleNamespace(directory=DirectorySettings(url="http://127.0.0.1:9/x",
                                                          timeout_s=1.5))
    directory = build_directory(config, clock)
    assert isinstance(directory, HttpDirectory)
    assert (directory.url, directory.timeout_s) == ("http://127.0.0.1:9/x", 1.5)
