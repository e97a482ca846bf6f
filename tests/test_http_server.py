"""The HTTP/1.1 server over real loopback sockets (trial TestCases on the global reactor,
clients in threads), plus timer behaviour on a Clock with an in-memory transport."""

import json
import socket

import httptools
import pytest
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from gateway.http.errors import ApiError
from gateway.http.server import HTTPFactory, PathRouter, json_response


# -- a raw HTTP client (runs in a thread) ----------------------------------------------

class _Collected:
    def __init__(self):
        self.responses = []
        self.parser = None
        self._status = None
        self._headers = {}
        self._body = []

    def on_headers_complete(self):
        self._status = self.parser.get_status_code()

    def on_header(self, name, value):
        self._headers[name.decode().lower()] = value.decode("latin-1")

    def on_body(self, body):
        self._body.append(body)

    def on_message_complete(self):
        self.responses.append((self._status, self._headers, b"".join(self._body)))
        self._headers, self._body = {}, []


class RawClient:
    """Sends bytes, reads whole responses; knows when the server closed."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.collected = _Collected()
        self.parser = httptools.HttpResponseParser(self.collected)
        self.collected.parser = self.parser
        self.closed = False

    def send(self, data):
        self.sock.sendall(data)

    def read(self, count):
        """The next `count` responses as (status, headers, body)."""
        start = len(self.collected.responses)
        while len(self.collected.responses) < start + count:
            if not self._receive():
                break
        out = self.collected.responses[start:start + count]
        return out

    def _receive(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        if not data:
            self.closed = True
            return False
        self.parser.feed_data(data)
        return True

    def wait_closed(self):
        while not self.closed and self._receive():
            pass
        return self.closed

    def close(self):
        self.sock.close()


def exchange(port, data, count):
    """Send `data` on a fresh connection; the responses and whether the server closed."""
    client = RawClient(port)
    try:
        client.send(data)
        responses = client.read(count)
        closed = client.wait_closed()
        return responses, closed
    finally:
        client.close()


def get(path, extra=b""):
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def post(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


# -- the routes under test ---------------------------------------------------------------

def make_router(log):
    router = PathRouter()

    def echo(request):
        log.append(request)
        return json_response(200, {"method": request.method, "path": request.path,
                                   "query": request.query, "length": len(request.body),
                                   "type": request.headers.get("content-type")})

    def slow(request):
        log.append(request)
        return deferLater(reactor, 0.2, lambda: json_response(200, {"n": "slow"}))

    def fast(request):
        log.append(request)
        return json_response(200, {"n": request.query.get("n")})

    def boom(request):
        raise RuntimeError("handler bug")

    def refused(request):
        raise ApiError("rate_limited", "slow down", headers={"Retry-After": "3"})

    router.add("POST", "/echo", echo)
    router.add("GET", "/echo", echo)
    router.add("GET", "/slow", slow)
    router.add("GET", "/fast", fast)
    router.add("GET", "/boom", boom)
    router.add("GET", "/refused", refused)
    router.add_prefix("GET", "/items/", "/items/{id}",
                      lambda request, item: json_response(200, {"item": item}))
    return router


class ServerTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        self.requests = []
        self.connections = 0

    def serve(self, **options):
        factory = HTTPFactory(make_router(self.requests), clock=reactor, **options)
        build = factory.buildProtocol

        def counting(addr):
            self.connections += 1
            return build(addr)

        factory.buildProtocol = counting
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(factory.stop)          # runs last: waits for every connection
        self.addCleanup(port.stopListening)
        self.factory = factory
        return port.getHost().port

    @defer.inlineCallbacks
    def test_keep_alive_serves_two_requests_on_one_connection(self):
        port = self.serve()

        def client():
            import http.client
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("POST", "/echo?a=1&b=%D8%B3", body=b'{"x": 1}',
                             headers={"Content-Type": "application/json"})
                first = conn.getresponse()
                first_body, first_headers = json.loads(first.read()), dict(first.headers)
                sock = conn.sock
                conn.request("GET", "/items/abc")
                second = conn.getresponse()
                return (first.status, first_body, first_headers, second.status,
                        json.loads(second.read()), conn.sock is sock and sock is not None)
            finally:
                conn.close()

        status1, body1, headers1, status2, body2, same = yield threads.deferToThread(client)
        self.assertEqual((status1, status2), (200, 200))
        self.assertEqual(body1, {"method": "POST", "path": "/echo", "query": {"a": "1", "b": "س"},
                                 "length": 8, "type": "application/json"})
        self.assertEqual(headers1["Content-Length"], str(len(json.dumps(body1,
                         ensure_ascii=False, separators=(",", ":")).encode())))
        self.assertIn("Date", headers1)
        self.assertEqual(body2, {"item": "abc"})
        self.assertTrue(same)
        self.assertEqual(self.connections, 1)

    @defer.inlineCallbacks
    def test_pipelined_requests_are_answered_in_order_even_when_the_first_is_slow(self):
        port = self.serve()
        data = get(b"/slow") + get(b"/fast?n=2") + get(b"/fast?n=3")
        client = RawClient(port)
        self.addCleanup(client.close)
        responses = yield threads.deferToThread(lambda: (client.send(data), client.read(3))[1])
        self.assertEqual([json.loads(r[2])["n"] for r in responses], ["slow", "2", "3"])
        self.assertEqual([r[0] for r in responses], [200, 200, 200])
        # The fast ones were handled before the slow one answered: real pipelining.
        self.assertEqual([r.path for r in self.requests], ["/slow", "/fast", "/fast"])

    @defer.inlineCallbacks
    def test_body_over_the_limit_is_413_and_the_connection_closes(self):
        port = self.serve(max_body=100)
        [(status, headers, body)], closed = yield threads.deferToThread(
            exchange, port, post(b"/echo", b"x" * 101), 1)
        self.assertEqual(status, 413)
        self.assertEqual(json.loads(body)["error"]["code"], "payload_too_large")
        self.assertEqual(headers["connection"], "close")
        self.assertTrue(closed)
        self.assertEqual(self.requests, [])

    @defer.inlineCallbacks
    def test_chunked_body_over_the_limit_is_413(self):
        port = self.serve(max_body=100)
        data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"40\r\n" + b"y" * 64 + b"\r\n" + b"40\r\n" + b"y" * 64 + b"\r\n0\r\n\r\n")
        [(status, _, body)], closed = yield threads.deferToThread(exchange, port, data, 1)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (413, "payload_too_large"))
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_chunked_body_within_the_limit_is_reassembled(self):
        port = self.serve()
        data = (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        [(status, _, body)], _ = yield threads.deferToThread(
            exchange, port, data + get(b"/fast?n=1", b"Connection: close\r\n"), 1)
        self.assertEqual((status, json.loads(body)["length"]), (200, 5))

    @defer.inlineCallbacks
    def test_malformed_request_is_400_and_the_connection_closes(self):
        port = self.serve()
        [(status, headers, body)], closed = yield threads.deferToThread(
            exchange, port, b"GET /echo HTTP/1.1\r\nHost t\r\n\r\n", 1)
        self.assertEqual(status, 400)
        self.assertEqual(json.loads(body), {"error": {"code": "invalid_request",
                                                      "message": "malformed HTTP request"}})
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_a_bad_request_after_good_ones_is_answered_after_them(self):
        port = self.serve()
        data = get(b"/slow") + b"BLAH\x00 / HTTP/1.1\r\n\r\n"
        responses, closed = yield threads.deferToThread(exchange, port, data, 2)
        self.assertEqual([r[0] for r in responses], [200, 400])
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(self):
        port = self.serve()
        data = get(b"/nothing") + b"DELETE /echo HTTP/1.1\r\nHost: t\r\n\r\n" \
            + get(b"/items/a/b", b"Connection: close\r\n")
        responses, closed = yield threads.deferToThread(exchange, port, data, 3)
        self.assertEqual([r[0] for r in responses], [404, 405, 404])
        self.assertEqual(json.loads(responses[0][2])["error"]["code"], "not_found")
        self.assertEqual(json.loads(responses[1][2])["error"]["code"], "method_not_allowed")
        self.assertEqual(responses[1][1]["allow"], "GET, HEAD, POST")
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_api_errors_and_handler_bugs_become_json_errors(self):
        port = self.serve()
        data = get(b"/refused") + get(b"/boom", b"Connection: close\r\n")
        self.flushLoggedErrors()
        responses, _ = yield threads.deferToThread(exchange, port, data, 2)
        self.assertEqual(responses[0][0], 429)
        self.assertEqual(responses[0][1]["retry-after"], "3")
        self.assertEqual(json.loads(responses[0][2])["error"]["code"], "rate_limited")
        self.assertEqual(responses[1][0], 500)
        self.assertEqual(json.loads(responses[1][2])["error"]["code"], "internal_error")

    @defer.inlineCallbacks
    def test_connection_close_is_honoured_and_later_bytes_ignored(self):
        port = self.serve()
        data = get(b"/fast?n=1", b"Connection: close\r\n") + get(b"/fast?n=2")
        responses, closed = yield threads.deferToThread(exchange, port, data, 2)
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0][1]["connection"], "close")
        self.assertTrue(closed)
        self.assertEqual(len(self.requests), 1)

    @defer.inlineCallbacks
    def test_http_10_closes_unless_keep_alive_is_asked(self):
        port = self.serve()
        plain = b"GET /fast?n=1 HTTP/1.0\r\n\r\n"
        responses, closed = yield threads.deferToThread(exchange, port, plain, 1)
        self.assertEqual(responses[0][0], 200)
        self.assertTrue(closed)

        kept = b"GET /fast?n=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        responses, closed = yield threads.deferToThread(exchange, port, kept + plain, 2)
        self.assertEqual([r[0] for r in responses], [200, 200])
        self.assertEqual(responses[0][1]["connection"], "keep-alive")
        self.assertTrue(closed)                # after the second, plain HTTP/1.0 request

    @defer.inlineCallbacks
    def test_expect_100_continue_gets_an_interim_answer_before_the_body(self):
        port = self.serve()

        def client():
            c = RawClient(port)
            try:
                c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                       b"Expect: 100-continue\r\n\r\n")
                head = c.sock.recv(100)
                c.send(b"abcd")
                final = c.read(1)
                return head, final
            finally:
                c.close()

        head, [(status, _, body)] = yield threads.deferToThread(client)
        self.assertEqual(head, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual((status, json.loads(body)["length"]), (200, 4))

    @defer.inlineCallbacks
    def test_too_many_headers_are_431(self):
        port = self.serve(max_headers=10)
        extra = b"".join(b"X-H%d: v\r\n" % i for i in range(11))
        [(status, _, body)], closed = yield threads.deferToThread(
            exchange, port, get(b"/fast", extra), 1)
        self.assertEqual((status, json.loads(body)["error"]["code"]), (431, "headers_too_large"))
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_head_gets_no_body_so_the_connection_stays_in_step(self):
        port = self.serve()
        data = b"HEAD /fast HTTP/1.1\r\nHost: t\r\n\r\n" + get(b"/fast?n=9",
                                                              b"Connection: close\r\n")

        def client():
            c = RawClient(port)
            try:
                c.send(data)
                raw = b""
                while True:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        return raw
                    raw += chunk
            finally:
                c.close()

        raw = yield threads.deferToThread(client)
        first, _, rest = raw.partition(b"\r\n\r\n")
        # HEAD is answered by GET's handler: its Content-Length, none of its body.
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "))
        self.assertNotIn(b"Content-Length: 0\r\n", first + b"\r\n")
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 "))
        self.assertTrue(rest.endswith(b'{"n":"9"}'))

    @defer.inlineCallbacks
    def test_stop_lets_an_in_flight_request_finish_then_closes(self):
        port = self.serve()
        client = RawClient(port)
        self.addCleanup(client.close)
        client.send(get(b"/slow"))
        yield deferLater(reactor, 0.05, lambda: None)
        while not self.requests:               # the request has reached the handler
            yield deferLater(reactor, 0.01, lambda: None)
        stopped = self.factory.stop()
        self.assertFalse(stopped.called)
        [(status, headers, body)] = yield threads.deferToThread(client.read, 1)
        self.assertEqual((status, headers["connection"]), (200, "close"))
        yield stopped
        self.assertEqual(self.factory.open_connections, 0)


# -- timers on a Clock -------------------------------------------------------------------

class Pending:
    """A handler whose answers the test releases."""

    def __init__(self):
        self.waiting = []
        self.router = PathRouter()
        self.router.add("GET", "/wait", self.wait)

    def wait(self, request):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


def connect(factory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout():
    clock = Clock()
    factory = HTTPFactory(PathRouter(), clock=clock, idle_timeout=60)
    protocol, transport = connect(factory)
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and transport.value() == b""


def test_unfinished_request_gets_408_after_the_request_timeout():
    clock = Clock()
    factory = HTTPFactory(PathRouter(), clock=clock, request_timeout=30)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(10)
    protocol.dataReceived(b"d")                # trickling does not extend the deadline
    clock.advance(20)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert b'"request_timeout"' in transport.value()
    assert transport.disconnecting


def test_a_request_waiting_for_its_handler_is_not_timed_out_and_idle_restarts_after():
    clock = Clock()
    pending = Pending()
    factory = HTTPFactory(pending.router, clock=clock, idle_timeout=5, request_timeout=5)
    protocol, transport = connect(factory)
    protocol.dataReceived(get(b"/wait"))
    clock.advance(100)
    assert not transport.disconnecting and transport.value() == b""
    pending.waiting[0].callback(json_response(200, {}))
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    clock.advance(5)
    assert transport.disconnecting
    protocol.connectionLost(None)              # the transport finishes closing
    assert not clock.getDelayedCalls() or all(not c.active() for c in clock.getDelayedCalls())


def test_connection_lost_cancels_timers_and_late_answers_are_dropped():
    clock = Clock()
    pending = Pending()
    factory = HTTPFactory(pending.router, clock=clock)
    protocol, transport = connect(factory)
    protocol.dataReceived(get(b"/wait"))
    protocol.connectionLost(None)
    assert clock.getDelayedCalls() == []
    written = transport.value()
    pending.waiting[0].callback(json_response(200, {}))
    assert transport.value() == written
    assert factory.open_connections == 0


@pytest.mark.parametrize("url", [b"/" + b"a" * 5000])
def test_overlong_url_is_414(url):
    factory = HTTPFactory(PathRouter(), clock=Clock())
    protocol, transport = connect(factory)
    protocol.dataReceived(b"GET " + url + b" HTTP/1.1\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 414 ")
    assert transport.disconnecting


def test_one_endless_header_is_cut_off():
    factory = HTTPFactory(PathRouter(), clock=Clock(), max_head_bytes=1024)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\nX-Long: ")
    for _ in range(10):
        protocol.dataReceived(b"v" * 500)
    assert transport.value().startswith(b"HTTP/1.1 431 ")
    assert transport.disconnecting


def test_upgrade_requests_are_answered_then_the_connection_closes():
    router = PathRouter()
    router.add("GET", "/x", lambda request: json_response(200, {"ok": 1}))
    protocol, transport = connect(HTTPFactory(router, clock=Clock()))
    protocol.dataReceived(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\n\r\nnot http any more")
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert transport.value().endswith(b'{"ok":1}')
    assert transport.disconnecting


@pytest.mark.parametrize("head", [
    b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
])
def test_ambiguous_framing_is_refused(head):
    router = PathRouter()
    router.add("GET", "/x", lambda request: json_response(200, {"ok": 1}))
    protocol, transport = connect(HTTPFactory(router, clock=Clock()))
    protocol.dataReceived(head)
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.disconnecting


def test_repeated_urls_and_headers_give_each_request_its_own_fresh_values():
    """Decoded URLs and header names are remembered between requests; what a handler
    gets must still be its own: mutating it changes nothing for the next request."""
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    seen = []

    def mutate(request):
        seen.append((dict(request.query), dict(request.headers), request.path))
        request.query["n"] = "changed"
        request.headers["x-tag"] = "changed"
        return json_response(200, {})

    router = PathRouter()
    router.add("GET", "/m x", mutate)
    factory = HTTPFactory(router, clock=Clock())
    channel = factory.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    request = get(b"/m%20x?n=1&n=2", b"X-Tag: a\r\nX-TAG: b\r\n")
    channel.dataReceived(request + request)
    expected = ({"n": "2"}, {"host": "t", "x-tag": "a, b"}, "/m x")
    assert seen == [expected, expected]
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    factory.stop()


def test_targets_with_a_query_are_decoded_each_time_and_never_fill_the_url_cache():
    """Kannel's sendsms puts a number and a text in every URL: remembering such
    targets would fill the bounded cache with URLs never seen again."""
    from gateway.http import server

    seen = []
    router = PathRouter()
    router.add("GET", "/q", lambda request: seen.append(dict(request.query))
               or json_response(200, {}))
    factory = HTTPFactory(router, clock=Clock())
    channel, transport = connect(factory)
    channel.dataReceived(b"".join(get(b"/q?to=%d&text=a+b" % n) for n in range(3))
                         + get(b"/q"))
    assert seen == [{"to": str(n), "text": "a b"} for n in range(3)] + [{}]
    assert not [url for url in server._URLS if b"?" in url]
    assert b"/q" in server._URLS
    assert transport.value().count(b"HTTP/1.1 200 OK") == 4
    factory.stop()


class RealSocketTests(unittest.TestCase):
    timeout = 30

    """Responses are sent straight to the socket when nothing waits before them; a
    pipelined burst and a large body must still arrive complete and in order."""

    @defer.inlineCallbacks
    def test_pipelined_and_large_responses_arrive_whole_and_in_order(self):
        big = "x" * 3_000_000
        router = PathRouter()
        router.add("GET", "/n", lambda request: json_response(200, {"n": request.query["i"]}))
        router.add("GET", "/big", lambda request: json_response(200, {"big": big}))
        factory = HTTPFactory(router, clock=reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(factory.stop)

        def client():
            received = bytearray()
            with socket.create_connection(("127.0.0.1", port.getHost().port),
                                          timeout=10) as s:
                s.sendall(b"".join(b"GET /n?i=%d HTTP/1.1\r\nHost: t\r\n\r\n" % i
                                   for i in range(20))
                          + b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                while chunk := s.recv(65536):
                    received.extend(chunk)
            return bytes(received)

        text = yield threads.deferToThread(client)
        bodies = [text.find(b'{"n":"%d"}' % i) for i in range(20)]
        self.assertTrue(all(b >= 0 for b in bodies) and bodies == sorted(bodies))
        self.assertEqual(text.count(b"HTTP/1.1 200 OK"), 21)
        self.assertTrue(text.endswith(b'"}'))
        self.assertEqual(text.count(b"x"), 3_000_000)


def test_a_wrapping_transport_is_never_bypassed():
    """TLS and other wrappers forward attribute lookups to the TCP transport beneath;
    a response must still go through the wrapper's write, never to the raw socket."""
    from gateway.http.server import _write_now
    from twisted.internet.protocol import Factory, Protocol
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    class RawSocket:
        sent = b""

        def send(self, data):
            RawSocket.sent += data
            return len(data)

    below = StringTransport()
    below.socket, below.dataBuffer, below._tempDataBuffer, below.TLS = RawSocket(), b"", [], False
    wrapper = ProtocolWrapper(WrappingFactory(Factory()), Protocol())
    wrapper.makeConnection(below)
    written = []
    wrapper.write = written.append              # what a TLS wrapper would encrypt
    _write_now(wrapper, b"HTTP/1.1 200 OK\r\n\r\n")
    assert written == [b"HTTP/1.1 200 OK\r\n\r\n"] and RawSocket.sent == b""


# -- back-pressure, pipelining limits, half-close, Host (issue 6) ---------------------

def echo_router(log=None):
    router = PathRouter()

    def echo(request):
        if log is not None:
            log.append(request.query.get("i"))
        return json_response(200, {"i": request.query.get("i"), "n": len(request.body)})

    router.add("GET", "/e", echo)
    router.add("POST", "/e", echo)
    return router


def numbered_posts(count, body=b'{"text": "' + b"x" * 180 + b'"}'):
    return b"".join(post(b"/e?i=%d" % i, body) for i in range(count))


def answered(transport):
    """The `i` of every answer written so far, in order."""
    out = []
    for chunk in transport.value().split(b"HTTP/1.1 ")[1:]:
        status = int(chunk[:3])
        out.append((status, json.loads(chunk.rpartition(b"\r\n\r\n")[2]).get("i")
                    if status == 200 else None))
    return out


def test_pipelined_requests_split_at_every_byte_are_all_answered():
    """A read that ends inside a head must not charge the earlier requests' bytes of that
    read to it (it did: a spurious 431 once the read exceeded twice the head limit)."""
    data = numbered_posts(12)
    assert len(data) > 2 * 1024
    expected = [(200, str(i)) for i in range(12)]
    for cut in range(1, len(data)):
        protocol, transport = connect(HTTPFactory(echo_router(), clock=Clock(),
                                                  max_head_bytes=1024))
        protocol.dataReceived(data[:cut])
        protocol.dataReceived(data[cut:])
        assert answered(transport) == expected, cut


def test_a_head_trickled_byte_by_byte_is_answered():
    protocol, transport = connect(HTTPFactory(echo_router(), clock=Clock()))
    for byte in numbered_posts(2):
        protocol.dataReceived(bytes([byte]))
    assert answered(transport) == [(200, "0"), (200, "1")]


def test_a_connection_registers_as_a_streaming_producer_of_its_transport():
    protocol, transport = connect(HTTPFactory(echo_router(), clock=Clock()))
    assert transport.producer is protocol and transport.streaming is True


def test_while_the_transport_is_full_nothing_more_is_read_or_parsed():
    log = []
    protocol, transport = connect(HTTPFactory(echo_router(log), clock=Clock()))
    protocol.pauseProducing()                  # what a TCP transport does when full
    assert transport.producerState == "paused"
    protocol.dataReceived(numbered_posts(20))
    assert log == [] and transport.value() == b""
    protocol.resumeProducing()                 # the buffer drained
    assert transport.producerState == "producing"
    assert answered(transport) == [(200, str(i)) for i in range(20)]


def test_a_transport_filling_up_mid_read_stops_parsing_the_rest_of_that_read():
    log = []
    protocol, transport = connect(HTTPFactory(echo_router(log), clock=Clock()))
    real_write = transport.write

    def write(data):
        real_write(data)
        if len(log) == 3:
            protocol.pauseProducing()          # full after the third answer

    transport.write = write
    data = numbered_posts(200)                 # ~50 KB: one read of a fast pipeliner
    protocol.dataReceived(data)
    held = len(log)
    assert 3 <= held < 40, held                # the rest of the read is kept unparsed
    protocol.resumeProducing()
    assert answered(transport) == [(200, str(i)) for i in range(200)]


def test_while_the_transport_is_full_answers_wait_queued_and_nothing_more_is_dispatched():
    """Audit 7: answers went on being written (and requests dispatched to the end of the
    4 KiB slice) after the transport said it was full: a cheap request with a large
    answer multiplied what a peer that never reads makes us hold."""
    log = []
    protocol, transport = connect(HTTPFactory(echo_router(log), clock=Clock()))
    real_write = transport.write
    writes = []

    def write(data):
        writes.append(data)
        real_write(data)
        if len(writes) == 3:
            protocol.pauseProducing()          # full after the third answer

    transport.write = write
    protocol.dataReceived(numbered_posts(200))
    assert len(writes) == 3                    # nothing written while full
    assert log == ["0", "1", "2"]              # and nothing more dispatched, mid-slice too
    protocol.resumeProducing()
    assert answered(transport) == [(200, str(i)) for i in range(200)]


def test_requests_dispatched_and_answers_kept_are_bounded_by_max_pipelined():
    pending = Pending()
    protocol, transport = connect(HTTPFactory(pending.router, clock=Clock(),
                                              max_pipelined=16))
    protocol.dataReceived(get(b"/wait") * 1000)          # 34 KB in one read
    assert len(pending.waiting) == 16                    # not the rest of the slice
    protocol.pauseProducing()                            # and now the peer stops reading
    for d in pending.waiting:
        d.callback(json_response(200, {}))
    assert transport.value() == b""
    assert len(protocol._queue) <= 16                    # the answers wait here, bounded
    pending.waiting = []
    protocol.resumeProducing()
    assert transport.value().count(b"HTTP/1.1 200 OK") == 16
    assert len(pending.waiting) == 16                    # the next ones, in order


def test_pipelined_requests_waiting_for_answers_are_bounded_within_one_read():
    pending = Pending()
    protocol, transport = connect(HTTPFactory(pending.router, clock=Clock(),
                                              max_pipelined=16))
    protocol.dataReceived(get(b"/wait") * 1000)          # 34 KB in one read
    assert 16 <= len(pending.waiting) <= 16 + 4096 // len(get(b"/wait"))
    assert transport.producerState == "paused"
    answered_count = 0
    while answered_count < 1000:
        waiting, pending.waiting = pending.waiting, []
        assert waiting, answered_count
        for d in waiting:
            d.callback(json_response(200, {}))
        answered_count += len(waiting)
    assert transport.value().count(b"HTTP/1.1 200 OK") == 1000
    assert transport.producerState == "producing"


def test_a_peer_that_never_reads_is_dropped_after_the_send_timeout():
    clock = Clock()
    factory = HTTPFactory(echo_router(), clock=clock, send_timeout=10)
    protocol, transport = connect(factory)
    protocol.dataReceived(get(b"/e"))
    protocol.pauseProducing()
    clock.advance(9)
    assert not transport.disconnecting
    protocol.resumeProducing()                 # it read a little: the wait starts again
    protocol.pauseProducing()
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnected              # aborted, not a flush that never ends


def test_closing_towards_a_peer_that_never_reads_is_bounded_too():
    clock = Clock()
    factory = HTTPFactory(echo_router(), clock=clock, send_timeout=10)
    protocol, transport = connect(factory)
    protocol.dataReceived(get(b"/e", b"Connection: close\r\n"))
    assert transport.disconnecting and not transport.disconnected
    assert transport.producer is None          # else TCP would wait for it forever
    clock.advance(11)
    assert transport.disconnected


def test_a_half_closed_client_still_gets_its_answer_then_the_connection_closes():
    pending = Pending()
    protocol, transport = connect(HTTPFactory(pending.router, clock=Clock()))
    protocol.dataReceived(get(b"/wait") + get(b"/wait"))
    protocol.readConnectionLost()              # SHUT_WR after its requests
    assert not transport.disconnecting
    pending.waiting[0].callback(json_response(200, {"n": 1}))
    assert not transport.disconnecting
    pending.waiting[1].callback(json_response(200, {"n": 2}))
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    assert transport.value().rpartition(b"HTTP/1.1 ")[2].count(b"Connection: close") == 1
    assert transport.disconnecting


def test_a_half_closed_idle_connection_closes_at_once():
    protocol, transport = connect(HTTPFactory(echo_router(), clock=Clock()))
    protocol.dataReceived(get(b"/e") + b"GET /e HTT")   # an unfinishable request
    protocol.readConnectionLost()
    assert answered(transport) == [(200, None)]
    assert transport.disconnecting


@pytest.mark.parametrize("head", [
    b"GET /e HTTP/1.1\r\n\r\n",
    b"GET /e HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
])
def test_a_request_without_exactly_one_host_is_400(head):
    log = []
    protocol, transport = connect(HTTPFactory(echo_router(log), clock=Clock()))
    protocol.dataReceived(head)
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert b'"invalid_request"' in transport.value() and b"Host" in transport.value()
    assert transport.disconnecting and log == []


def test_http_10_needs_no_host():
    protocol, transport = connect(HTTPFactory(echo_router(), clock=Clock()))
    protocol.dataReceived(b"GET /e HTTP/1.0\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 ")


def test_connections_beyond_the_cap_are_answered_503_overloaded_and_closed():
    log = []
    factory = HTTPFactory(echo_router(log), clock=Clock(), max_connections=2)
    first, first_transport = connect(factory)
    second, _ = connect(factory)
    third, third_transport = connect(factory)
    third.dataReceived(post(b"/e?i=3", b"{}"))
    status_line, _, rest = third_transport.value().partition(b"\r\n")
    assert status_line == b"HTTP/1.1 503 Service Unavailable"
    assert json.loads(rest.rpartition(b"\r\n\r\n")[2])["error"]["code"] == "overloaded"
    assert b"Retry-After: " in rest and b"Connection: close" in rest
    assert third_transport.disconnecting and log == []
    first.dataReceived(get(b"/e?i=1"))         # those within the cap are served
    assert answered(first_transport) == [(200, "1")]
    assert factory.open_connections == 2


def test_a_connection_over_the_cap_that_sends_nothing_is_closed_soon():
    clock = Clock()
    factory = HTTPFactory(echo_router(), clock=clock, max_connections=1)
    connect(factory)
    _, transport = connect(factory)
    clock.advance(3)
    assert transport.disconnecting and transport.value() == b""


def test_beyond_the_cap_and_its_refusals_a_connection_is_not_even_built():
    factory = HTTPFactory(echo_router(), clock=Clock(), max_connections=1, max_refusing=3)
    built = []
    for _ in range(5):                         # as a listening port does: build, connect
        protocol = factory.buildProtocol(None)
        built.append(protocol)
        if protocol is not None:
            protocol.makeConnection(StringTransport())
    assert [p is not None for p in built] == [True] * 4 + [False]


def test_stopping_drops_what_a_paused_connection_read_but_never_parsed():
    log = []
    factory = HTTPFactory(echo_router(log), clock=Clock())
    protocol, transport = connect(factory)
    protocol.pauseProducing()
    protocol.dataReceived(numbered_posts(3))
    factory.stop()
    assert transport.disconnecting and log == [] and transport.value() == b""


def test_a_channel_stays_within_cpythons_fast_attribute_layout():
    """Past 30 instance attributes CPython 3.11 gives up its shared-key layout and every
    attribute access of the hot path slows down; a new one needs another to go."""
    protocol, _ = connect(HTTPFactory(echo_router(), clock=Clock()))
    protocol.dataReceived(get(b"/e") + b"GET /e HTTP/1.1\r\nHost")
    assert len(vars(protocol)) < 30


# -- streamed bodies ---------------------------------------------------------------------

class SlowConsumer:
    """Takes a streamed body, holding it back after `lag` bytes until told to go on."""

    def __init__(self, request, flow, lag=10_000):
        self.request, self.flow, self.lag = request, flow, lag
        self.received = 0
        self.finished = self.aborted = False

    def data(self, chunk):
        if b"!" in chunk:
            raise ApiError("payload_too_large", "too many recipients")
        self.received += len(chunk)
        if self.received >= self.lag:
            self.flow.pause_body()

    def go_on(self):
        self.lag = self.received + 10_000
        self.flow.resume_body()

    def finish(self):
        self.finished = True
        return json_response(202, {"n": self.received})

    def abort(self):
        self.aborted = True


def streaming_router(consumers):
    router = PathRouter()

    def begin(request, flow):
        if request.query.get("refuse"):
            raise ApiError("unauthorized", "no")
        consumers.append(SlowConsumer(request, flow))
        return consumers[-1]

    router.add_streamed("POST", "/s", begin)
    router.add("POST", "/e", echo_router().__call__)
    return router


def test_a_streamed_body_goes_past_the_buffer_cap_held_back_while_its_consumer_lags():
    consumers = []
    factory = HTTPFactory(streaming_router(consumers), clock=Clock(), max_body=1000)
    protocol, transport = connect(factory)
    body = b"9" * 100_000
    protocol.dataReceived(b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                          % len(body))
    consumer, = consumers
    assert consumer.request.body is None and consumer.request.path == "/s"
    offset = 0
    while offset < len(body):             # the client writes while the socket reads
        if transport.producerState != "paused":
            protocol.dataReceived(body[offset:offset + 16_384])
            offset += 16_384
        else:
            # Held back: what it got is bounded by one parse slice past its lag.
            assert consumer.received <= consumer.lag + 4096
            consumer.go_on()
    assert consumer.finished and consumer.received == len(body)
    status_line = transport.value().split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 202 Accepted"
    assert b'{"n":100000}' in transport.value()


def test_a_consumer_refusing_mid_body_answers_the_error_and_closes():
    consumers = []
    factory = HTTPFactory(streaming_router(consumers), clock=Clock())
    protocol, transport = connect(factory)
    protocol.dataReceived(b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n123!")
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert transport.disconnecting


def test_a_refused_head_is_answered_before_any_body_and_a_dropped_body_aborts():
    consumers = []
    factory = HTTPFactory(streaming_router(consumers), clock=Clock())
    protocol, transport = connect(factory)
    protocol.dataReceived(b"POST /s?refuse=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 401 ") and not consumers
    protocol, transport = connect(factory)
    protocol.dataReceived(b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n1234")
    protocol.connectionLost(None)
    assert consumers[-1].aborted and not consumers[-1].finished
