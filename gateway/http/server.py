"""HTTP/1.1 server: a Twisted Protocol around httptools (llhttp), and a small router.

Why not twisted.web: for the JSON POSTs agencies send, a plain Protocol parsing with
llhttp measured ~4x the throughput of a Resource tree on the same box. This module knows
HTTP only: framing, keep-alive, pipelining, limits, timeouts. What a path means is the
router's business; what a request means is the handler's.

Pipelined requests are answered strictly in arrival order: each complete request takes
a slot in a queue, handlers may answer later (a Deferred), and the head of the queue is
written as soon as it is ready.

Back-pressure: a channel is the streaming producer of its transport. While the transport
cannot take more (its buffer is over Twisted's bufferSize) or too many requests wait for
their answers, the channel writes no more answers (they wait in the queue), asks no
handler anything new (requests the current parse slice still completes are held, not
dispatched), stops reading from the socket and stops parsing what it has already read; a
peer that stays unwritable for send_timeout is dropped. So what one connection can make
us hold is bounded: a read, at most max_pipelined answers, the transport's buffer.
"""

import json
import logging
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import parse_qsl, unquote

import httptools
from twisted.internet import defer, tcp
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from zope.interface import implementer

from gateway import metrics
from gateway.http.errors import ApiError, error_document

log = logging.getLogger("payam.http")

SERVER_NAME = b"payam-gateway"
JSON_TYPE = "application/json; charset=utf-8"

DEFAULT_MAX_BODY = 256 * 1024          # 1,000 recipients with escaped Persian digits fit
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEAD_BYTES = 16 * 1024     # request line + headers
DEFAULT_MAX_URL = 4096
DEFAULT_IDLE_TIMEOUT = 60.0            # a keep-alive connection with nothing to do
DEFAULT_REQUEST_TIMEOUT = 30.0         # from a request's first byte to its last
DEFAULT_SEND_TIMEOUT = 30.0            # a peer that takes none of our answers this long
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_PIPELINED = 64             # requests waiting for answers before we stop reading
DEADLINE_SWEEP_S = 1.0                 # timeouts are checked this often, not timed each
PARSE_SLICE = 4096                     # a longer read is parsed this much at a time, so
                                       # parsing can stop within it (see dataReceived)
REFUSING_TIMEOUT = 2.0                 # how long a connection over the cap, to be answered
                                       # 503, may take to send its request
CAP_WARNING_INTERVAL_S = 10.0

_REASONS = {s.value: s.phrase for s in HTTPStatus}


class Request:
    __slots__ = ("method", "path", "_query", "raw_query", "headers", "body", "peer")

    def __init__(self, method, path, query, headers, body, peer, raw_query=b""):
        self.method = method            # "GET"
        self.path = path                # percent-decoded, without the query
        self._query = query             # {name: last value}, or None: from raw_query
        self.raw_query = raw_query      # the query string as sent (bytes), for handlers
                                        # that decode it themselves (Kannel's sendsms)
        self.headers = headers          # {lower-case name: value}; repeats joined by ", "
        self.body = body                # bytes
        self.peer = peer                # client IP address, for audit

    @property
    def query(self):
        """{name: last value} of the query string, decoded on first use: most handlers
        never read it, and a query (Kannel's sendsms) can be long."""
        if self._query is None:
            raw = self.raw_query
            self._query = dict(parse_qsl(raw.decode("latin-1"))) if raw else {}
        return self._query


class Response:
    __slots__ = ("status", "body", "headers")

    def __init__(self, status, body=b"", headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}


def json_response(status, obj, headers=None):
    """A UTF-8 JSON answer; Persian stays readable (ensure_ascii=False)."""
    body = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    all_headers = {"Content-Type": JSON_TYPE}
    if headers:
        all_headers.update(headers)
    return Response(status, body, all_headers)


def error_response(error):
    return json_response(error.status, error_document(error.code, error.message), error.headers)


# -- routing --------------------------------------------------------------------------

class PathRouter:
    """Exact paths, and prefixes whose remainder is one path segment (`/v1/messages/{id}`).

    Counts every answer in payam_http_requests_total under the route's template, never the
    raw path, so the label set stays bounded."""

    has_streams = False                 # whether any route takes a streamed body
    streamed_paths = frozenset()        # the paths of those routes

    def __init__(self, clock=None):
        """clock: an IReactorTime, for the answer times (payam_http_request_seconds)."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self._counts = _Counts(clock)
        self._exact = {}                # path -> {method: handler}
        self._prefixes = []             # (prefix, template, {method: handler})

    def add(self, method, path, handler):
        self._exact.setdefault(path, {})[method] = handler

    def add_streamed(self, method, path, handler):
        """A route whose body is not buffered: handler(request, flow) is called once the
        head is read (request.body None) and returns the body's consumer, which gets
        `data(chunk)` per piece of body, then `finish()` → the Response (or a Deferred
        of one), or `abort()` if the request ends unfinished.  The consumer holds the
        body back with flow.pause_body() / flow.resume_body().  Raising ApiError (in the
        handler or in data) refuses the request; the connection is then closed."""
        self._exact.setdefault(path, {})[method] = Streamed(handler)
        self.has_streams = True
        self.streamed_paths = self.streamed_paths | {path}

    def streamed(self, method, path):
        """The Streamed route for this method and path, or None."""
        handler = self._exact.get(path, {}).get(method)
        return handler if isinstance(handler, Streamed) else None

    def finish_stream(self, consumer, route, started):
        """The consumer's answer, counted (and timed from `started`) as every answer is."""
        try:
            result = consumer.finish()
        except Exception:
            result = _as_response(Failure())
        if isinstance(result, defer.Deferred):
            result.addBoth(_count_outcome, route, self._counts, started)
            return result
        return _count(result, route, self._counts, started)

    def add_prefix(self, method, prefix, template, handler):
        """handler(request, remainder) for paths `prefix + remainder`, remainder one
        non-empty segment."""
        for known_prefix, _, handlers in self._prefixes:
            if known_prefix == prefix:
                handlers[method] = handler
                return
        self._prefixes.append((prefix, template, {method: handler}))

    def _match(self, path):
        handlers = self._exact.get(path)
        if handlers is not None:
            return path, handlers, ()
        for prefix, template, handlers in self._prefixes:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if rest and "/" not in rest:
                    return template, handlers, (rest,)
        return None, None, ()

    def __call__(self, request):
        return self.dispatch(request)

    def dispatch(self, request, then=None, slot=None):
        """The answer to `request` (a Response, or a Deferred of one), counted.  With
        `then`, an answer that comes later is handed to then(response or Failure, slot)
        inside the same callback that counts it (None is returned): each Deferred link
        costs ~0.7 µs per request."""
        route, handlers, args = self._match(request.path)
        started = self.clock.seconds()
        try:
            if handlers is None:
                raise ApiError("not_found", f"no such endpoint: {request.path[:100]}")
            handler = handlers.get(request.method)
            if handler is None and request.method == "HEAD":
                # HEAD wherever GET: the GET's answer, whose body the channel leaves out.
                handler = handlers.get("GET")
            if handler is None:
                allowed = sorted({*handlers, *(("HEAD",) if "GET" in handlers else ())})
                raise ApiError("method_not_allowed",
                               f"{request.method} is not allowed here; use "
                               + " or ".join(allowed),
                               headers={"Allow": ", ".join(allowed)})
            result = handler(request, *args)
        except Exception:
            result = _as_response(Failure())
        if isinstance(result, defer.Deferred):
            # One callback for "failure → error answer, then count": each Deferred link
            # costs µs on the hot path.
            if then is None:
                result.addBoth(_count_outcome, route or "unmatched", self._counts, started)
                return result
            result.addBoth(_count_then, route or "unmatched", self._counts, started, then,
                           slot)
            return None
        return _count(result, route or "unmatched", self._counts, started)


class Streamed:
    """A route handler that takes its body as a stream (PathRouter.add_streamed)."""
    __slots__ = ("handler",)

    def __init__(self, handler):
        self.handler = handler

    def __call__(self, request, *args):
        raise ApiError("invalid_request", "this endpoint takes its body as a stream")


class _Stream:
    """The body consumer of the request being read, and whether it holds us back."""
    __slots__ = ("consumer", "route", "paused", "started")

    def __init__(self, consumer, route, started):
        self.consumer = consumer
        self.route = route
        self.paused = False
        self.started = started             # when its head was read (the answer's time)


def _count_outcome(result, route, counts, started):
    if isinstance(result, Failure):
        result = _as_response(result)
    return _count(result, route, counts, started)


def _count_then(result, route, counts, started, then, slot):
    try:
        result = _count_outcome(result, route, counts, started)
    except Exception:
        result = Failure()
    then(result, slot)


def _as_response(failure):
    if failure.check(ApiError):
        return error_response(failure.value)
    log.error("handler failed", exc_info=(failure.type, failure.value, failure.tb))
    return error_response(ApiError("internal_error", "internal error; it has been logged"))


def _count(response, route, counts, started):
    status = response.status
    counted = counts.cached.get((route, status))
    if counted is None:
        counted = counts.counted(route, status)
    counted[0](1)
    counted[1](counts.clock.seconds() - started)
    return response


_MAX_COUNTED = 4096


class _Counts:
    """A router's answer counts: written once per reactor turn (metrics.TurnCounts: in
    the split daemon a count and an observe were ~3 µs of locked mmap writes per
    request), and per (route, status) its count's add and latency's observe, one dict
    lookup per answer, not two metrics.child calls. Bounded: routes are templates,
    statuses few."""
    __slots__ = ("clock", "turn", "cached")

    def __init__(self, clock):
        self.clock = clock
        self.turn = metrics.TurnCounts(clock)
        self.cached = {}

    def counted(self, route, status):
        counted = (self.turn.adder(metrics.child(metrics.HTTP_REQUESTS, route, status)),
                   self.turn.observer(metrics.child(
                       metrics.HTTP_SECONDS, route,
                       _STATUS_CLASSES.get(status // 100, "other"))))
        if len(self.cached) < _MAX_COUNTED:
            self.cached[(route, status)] = counted
        return counted


_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


# -- the connection ----------------------------------------------------------------------

# Clients send the same few header names and URLs again and again: their decoded forms
# are remembered (first come, bounded; never evicted, so a client cannot churn them).
# Only targets without a query are: one with a query (Kannel's sendsms, a number and a
# text in it) is seldom seen twice, and would fill the cache for nothing.
_CACHE_LIMIT = 512
_HEADER_NAMES = {}       # raw header name -> lower-case str
_URLS = {}               # raw request target without a query -> (path, b"")


def _parse_target(url):
    """(percent-decoded path, raw query bytes) of a request target, or None if
    malformed; remembered when it has no query."""
    target = _URLS.get(url)
    return target if target is not None else _decode_target(url)


def _decode_target(url):
    """_parse_target for a target not remembered (yet)."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return None
    target = unquote(parsed.path.decode("latin-1"), errors="replace"), parsed.query or b""
    if not target[1] and len(_URLS) < _CACHE_LIMIT:
        _URLS[url] = target
    return target


def _plain_path(url):
    """The path of an origin-form target with no percent-escape (as _parse_target would
    decode it), or None: a cheap look at the path before the whole target is parsed."""
    path = url.partition(b"?")[0].partition(b"#")[0]
    if path[:1] != b"/" or b"%" in path:
        return None
    return path.decode("latin-1")


def _write_now(transport, data):
    """transport.write(data), but sent at once when nothing is buffered before it.

    Twisted buffers every write until the reactor's next turn, which costs two epoll_ctl
    calls and a poll wake-up per response on top of the send (~10% of the daemon's CPU
    at 5,000 requests/s, measured).  Only a plain TCP transport with an empty buffer is
    written directly; anything else, and whatever the socket does not take, goes through
    transport.write as usual, so ordering and back-pressure are unchanged."""
    # Exactly a plain TCP connection: a wrapper (TLS, policies) forwards attribute
    # lookups to the TCP transport below it, and writing to that socket would bypass it.
    if (isinstance(transport, tcp.Connection) and not transport.TLS
            and not transport.disconnecting
            and not transport.dataBuffer and not transport._tempDataBuffer):
        try:
            sent = transport.socket.send(data)
        except OSError:          # EAGAIN or a dying connection: Twisted's path decides
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing this connection."""


class _Slot:
    """A request's place in the answer order."""
    __slots__ = ("response", "close", "head_only", "say_keep_alive")

    def __init__(self, close, head_only):
        self.response = None
        self.close = close
        self.head_only = head_only
        self.say_keep_alive = False


@implementer(IPushProducer, IHalfCloseableProtocol)
class HTTPChannel(Protocol):
    """One client connection: parse, queue, answer in order, time out, hold back.

    The channel is its transport's streaming producer: the transport pauses it when its
    buffer is full and resumes it once drained (see the module docstring)."""

    over_capacity = False

    # CPython 3.11 keeps at most 30 instance attributes in its fast shared layout; past
    # that every attribute access slows down (+8% of the hot path, measured). With the
    # two Twisted sets (transport, connected) this class has 29.
    def __init__(self, factory):
        self.factory = factory
        self._parser = httptools.HttpRequestParser(self)
        self._queue = deque()
        self._closed = False             # connectionLost has run
        self._closing = False            # we asked the transport to close
        self._accepting = True           # False once a request said close, or on error
        self._deadline = None            # idle or request timeout, see _set_timer
        self._on_deadline = None
        self._in_request = False         # bytes of a request seen, not yet complete
        self._head_began = False         # the current head began in the bytes being parsed
        self._continue_owed = False
        self._paused = False             # not reading: transport full or queue long
        self._write_blocked = False      # the transport's buffer is full
        self._stalled_since = None       # since then waiting for the peer to take our bytes
        self._read_closed = False        # the peer half-closed (SHUT_WR)
        self._unparsed = b""             # read but not parsed while paused: one read at most
        self._held = deque()             # (request, slot) parsed while paused, not yet
                                         # dispatched: one parse slice at most
        self._releasing = False          # inside _release: answers must not re-enter it
        self._peer = ""
        self._reset_request()

    def _reset_request(self):
        self._url = b""
        self._headers = {}
        self._header_count = 0
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._headers_done = False
        self._body = []
        self._body_len = 0

    # -- streamed bodies: the consumer's flow control --

    # A streamed request's _Stream is kept where a buffered one keeps its chunks
    # (_body): one attribute more would leave CPython's fast layout (see __init__).
    @property
    def _stream(self):
        body = self._body
        return body if body.__class__ is _Stream else None

    @_stream.setter
    def _stream(self, stream):
        self._body = [] if stream is None else stream

    def pause_body(self):
        """The body's consumer lags: read no more of it until resume_body."""
        if self._stream is not None:
            self._stream.paused = True
            self._hold()

    def resume_body(self):
        stream = self._stream
        if stream is not None and stream.paused:
            stream.paused = False
            if self._in_request:          # our wait is not the client's delay
                self._set_timer(self.factory.request_timeout, self._request_timeout)
            self._release()

    def _abort_stream(self):
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.consumer.abort()
            except Exception:
                log.exception("aborting a streamed body failed")

    # -- connection lifecycle --

    def connectionMade(self):
        peer = self.transport.getPeer()
        self._peer = getattr(peer, "host", str(peer))
        self.factory._track(self)
        self.transport.registerProducer(self, True)
        self._set_timer(self.factory.idle_timeout, self._idle_timeout)
        if self.factory.stopping:
            self._close()

    def connectionLost(self, reason=None):
        self._closed = True
        self._abort_stream()
        self._cancel_timer()
        self._stalled_since = None
        self._unparsed = b""
        self._held.clear()
        self.factory._connection_gone(self)

    def readConnectionLost(self):
        """The peer half-closed after its requests: answer them, then close. A request
        it left unfinished can never complete and is dropped."""
        self._read_closed = True
        self._accepting = False
        if self._in_request:
            self._in_request = False
            self._cancel_timer()
        self._flush()

    def writeConnectionLost(self):
        self._close()

    def is_idle(self):
        return (not self._queue and not self._held and not self._in_request
                and not self._unparsed)

    def close_when_idle(self):
        """The factory is stopping: finish what was asked, take nothing new (what was
        read but not yet parsed is dropped: it was never asked)."""
        self._accepting = False
        self._unparsed = b""
        if self.is_idle():
            self._close()

    def _close(self):
        """Close once our answers are out. A peer that does not take them within
        send_timeout is aborted (deadline_passed): a flush must not wait forever."""
        if self._closing or self._closed:
            return
        self._closing = True
        self._accepting = False
        self._unparsed = b""
        if self._stalled_since is None:
            self._stalled_since = self.factory.clock.seconds()
        # A TCP transport with a registered producer never finishes closing.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- back-pressure: IPushProducer, called by the transport --

    def pauseProducing(self):
        """The transport's buffer is full: write, dispatch, read and parse nothing more
        until it drains."""
        self._write_blocked = True
        if self._stalled_since is None:
            self._stalled_since = self.factory.clock.seconds()
        self._hold()

    def resumeProducing(self):
        self._write_blocked = False
        if not self._closing:
            self._stalled_since = None
        self._flush()                          # the answers kept meanwhile, then _release

    def stopProducing(self):
        """The connection is going away; connectionLost cleans up."""

    def _hold(self):
        if not self._paused and not self._closing:
            self._paused = True
            self.transport.pauseProducing()

    def _release(self):
        """Go on once nothing holds us back: first the requests parsed while held, then
        what was kept unparsed, then reading."""
        if (not self._paused or self._releasing or self._write_blocked or self._closing
                or self._closed or (self._stream is not None and self._stream.paused)):
            return
        queue, held, limit = self._queue, self._held, self.factory.max_pipelined
        self._releasing = True                 # their answers call _flush, which calls us
        try:
            while held:
                if self._write_blocked or self._closing or self._closed or len(queue) >= limit:
                    return
                request, slot = held.popleft()
                queue.append(slot)
                if request is None:            # a refusal, answered already
                    self._flush()
                else:
                    self._dispatch(request, slot)
            if len(queue) >= limit // 2:
                return
            self._paused = False
        finally:
            self._releasing = False
        # Never inside the parser: what is kept unparsed is only set once parsing stops.
        if self._unparsed:
            data, self._unparsed = self._unparsed, b""
            self.dataReceived(data)            # may hold us back again
        if not (self._paused or self._read_closed or self._closing or self._closed):
            self.transport.resumeProducing()

    # -- bytes in --

    def dataReceived(self, data):
        if not self._accepting:
            return
        if self._paused:
            # What one read brought: the transport reads nothing more until we resume.
            self._unparsed += data
            return
        if len(data) > PARSE_SLICE:
            self._parse_in_slices(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # We speak no other protocol: answer what was asked, then close.
            self._accepting = False
            if self._queue:
                self._queue[-1].close = True
            else:
                self._close()
            return
        except _Abort:
            return
        except httptools.HttpParserError as error:
            # After a request that closes the connection llhttp refuses further bytes;
            # those are ignored, not answered.
            if isinstance(error.__context__, _Abort) or not self._accepting:
                return
            self._refuse(ApiError("invalid_request", "malformed HTTP request"))
            return
        if self._in_request and not self._headers_done and not self._head_began:
            # httptools holds an unfinished header until it ends: bound what a client can
            # make us hold. Bytes that began this head also held the requests before it,
            # so they are not counted (one slice at most); every later byte is.
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > 2 * self.factory.max_head_bytes:
                self._refuse(ApiError("headers_too_large", "request headers are too large"))
        self._head_began = False

    def _parse_in_slices(self, data):
        """A long read (a pipeliner's 64 KB holds hundreds of requests) is parsed a slice
        at a time, so that holding back takes effect within it; the rest waits."""
        size = len(data)
        offset = 0
        while offset < size:
            if self._paused:
                self._unparsed = data[offset:]
                return
            self.dataReceived(data[offset:offset + PARSE_SLICE])
            if not self._accepting or self._closed:
                return
            offset += PARSE_SLICE

    # httptools callbacks

    def on_message_begin(self):
        if not self._accepting:
            raise _Abort()
        self._in_request = True
        self._reset_request()
        self._head_began = True
        self._set_timer(self.factory.request_timeout, self._request_timeout)

    def on_url(self, url):
        self._url += url
        if len(self._url) > self.factory.max_url:
            self._refuse(ApiError("uri_too_long", "request URL is too long"))
            raise _Abort()

    def on_header(self, name, value):
        factory = self.factory
        count = self._header_count = self._header_count + 1
        head_bytes = self._head_bytes = self._head_bytes + len(name) + len(value) + 4
        if (count > factory.max_headers
                or head_bytes + len(self._url) > factory.max_head_bytes):
            self._refuse(ApiError("headers_too_large", "too many or too large request headers"))
            raise _Abort()
        key = _HEADER_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_HEADER_NAMES) < _CACHE_LIMIT:
                _HEADER_NAMES[name] = key
        text = value.decode("latin-1")
        headers = self._headers
        previous = headers.get(key)
        headers[key] = text if previous is None else previous + ", " + text

    def on_headers_complete(self):
        self._headers_done = True
        headers = self._headers
        # RFC 9112 3.2: HTTP/1.1 needs a Host; any request may carry at most one.
        host = headers.get("host")
        if host is None:
            if self._parser.get_http_version() == "1.1":
                self._refuse(ApiError("invalid_request", "HTTP/1.1 requests need a Host header"))
                raise _Abort()
        elif "," in host:
            self._refuse(ApiError("invalid_request", "a request may carry one Host header"))
            raise _Abort()
        if (getattr(self.factory.router, "has_streams", False) and not self.over_capacity
                and self._open_stream()):
            pass
        elif (length := headers.get("content-length")) is not None:
            try:
                too_big = int(length) > self.factory.max_body
            except ValueError:          # llhttp has already refused malformed values
                too_big = False
            if too_big:
                self._refuse_body()
                raise _Abort()
        if (headers.get("expect", "").lower() == "100-continue"
                and self._parser.get_http_version() == "1.1"):
            self._continue_owed = True
            self._maybe_send_continue()

    def _open_stream(self):
        """If the request's route takes its body as a stream, hand its head to the
        route's handler now; True if it did (its consumer then gets the body)."""
        streamed_paths = self.factory.router.streamed_paths
        target = _URLS.get(self._url)
        if target is None:
            plain = _plain_path(self._url)
            if plain is not None and plain not in streamed_paths:
                return False              # a query's target: parsed once, when complete
            target = _decode_target(self._url)
        if target is None:
            return False                  # refused as malformed once complete
        if target[0] not in streamed_paths:
            return False
        method = self._parser.get_method().decode("ascii", "replace")
        streamed = self.factory.router.streamed(method, target[0])
        if streamed is None:
            return False
        request = Request(method, target[0], None, self._headers, None, self._peer,
                          target[1])
        try:
            consumer = streamed.handler(request, self)
        except Exception:
            self._refuse_response(_as_response(Failure()))
            raise _Abort()
        self._stream = _Stream(consumer, target[0], self.factory.router.clock.seconds())
        return True

    def on_body(self, body):
        stream = self._body
        if stream.__class__ is _Stream:
            self._set_timer(self.factory.request_timeout, self._request_timeout)
            try:
                stream.consumer.data(body)
            except Exception:
                self._abort_stream()
                self._refuse_response(_as_response(Failure()))
                raise _Abort()
            return
        self._body_len += len(body)
        if self._body_len > self.factory.max_body:
            self._refuse_body()
            raise _Abort()
        self._body.append(body)

    def on_message_complete(self):
        self._in_request = False
        self._continue_owed = False
        self._cancel_timer()
        if self._body.__class__ is _Stream:
            self._finish_stream()
            return
        method = self._parser.get_method().decode("ascii", "replace")
        keep_alive = self._parser.should_keep_alive() and not self.factory.stopping
        target = _parse_target(self._url)
        if target is None:
            self._refuse(ApiError("invalid_request", "malformed request URL"))
            raise _Abort()
        body = self._body
        request = Request(method, target[0], None, self._headers,
                          body[0] if len(body) == 1 else b"".join(body), self._peer,
                          target[1])
        slot = _Slot(close=not keep_alive, head_only=method == "HEAD")
        # An HTTP/1.0 client asked for keep-alive: it needs to hear that it got it.
        slot.say_keep_alive = keep_alive and self._parser.get_http_version() == "1.0"
        if slot.close:
            self._accepting = False
        self._reset_request()
        if self._paused:
            # Held back in the middle of a parse slice: ask nothing more until released
            # (a cheap request with a large answer would multiply what we hold).
            self._held.append((request, slot))
            return
        self._queue.append(slot)
        if len(self._queue) >= self.factory.max_pipelined:
            self._hold()
        self._dispatch(request, slot)

    def _finish_stream(self):
        """The streamed body is complete: its consumer's answer takes the next slot."""
        stream, self._stream = self._stream, None
        keep_alive = self._parser.should_keep_alive() and not self.factory.stopping
        slot = _Slot(close=not keep_alive, head_only=False)
        slot.say_keep_alive = keep_alive and self._parser.get_http_version() == "1.0"
        if slot.close:
            self._accepting = False
        self._reset_request()
        self._queue.append(slot)
        result = self.factory.router.finish_stream(stream.consumer, stream.route,
                                                    stream.started)
        if isinstance(result, defer.Deferred):
            result.addBoth(self._answer_outcome, slot)
        else:
            self._answer(result, slot)

    # -- answers --

    def _dispatch(self, request, slot):
        try:
            dispatch = self.factory.dispatch
            if dispatch is not None:
                # A later answer comes to _answer_outcome in the router's own callback.
                result = dispatch(request, self._answer_outcome, slot)
                if result is None:
                    return
            else:
                result = self.factory.router(request)
        except Exception:
            result = _as_response(Failure())
        if isinstance(result, defer.Deferred):
            result.addBoth(self._answer_outcome, slot)    # one link, not three
        else:
            self._answer(result, slot)

    def _answer_outcome(self, result, slot):
        try:
            if isinstance(result, Failure):
                result = _as_response(result)
            self._answer(result, slot)
        except Exception:
            log.error("answering failed: %s", Failure().getTraceback())

    def _answer(self, response, slot):
        slot.response = response
        self._flush()

    def _refuse(self, error, close=True):
        """Answer an unusable request after those before it, then close."""
        self._refuse_response(error_response(error), close)

    def _refuse_response(self, response, close=True):
        self._abort_stream()
        self._accepting = False
        self._in_request = False
        self._cancel_timer()
        slot = _Slot(close=close, head_only=False)
        slot.response = response
        if self._held:                         # after the requests held before it
            self._held.append((None, slot))
            return
        self._queue.append(slot)
        self._flush()

    def _refuse_body(self):
        self._refuse(ApiError(
            "payload_too_large",
            f"request body is larger than {self.factory.max_body} bytes"))

    def _maybe_send_continue(self):
        # An interim answer must not slip between earlier requests' responses.
        if self._continue_owed and not self._queue and not self._closed:
            self._continue_owed = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _flush(self):
        queue = self._queue
        while queue and queue[0].response is not None:
            if self._closed or self.transport.disconnecting:
                queue.popleft()
                continue
            if self._write_blocked:
                break                          # they wait here until resumeProducing
            slot = queue.popleft()
            close = slot.close or (not self._accepting and not queue
                                   and not self._in_request and not self._held)
            _write_now(self.transport, self._serialize(slot, close))
            if slot.close:
                queue.clear()
                self._held.clear()
                self._close()
                return
        if self._closed or self._closing:
            return
        if self._paused:
            self._release()
            if self._closed or self._closing:
                return
        self._maybe_send_continue()
        if self.is_idle():
            if not self._accepting:
                self._close()
            else:
                self._set_timer(self.factory.idle_timeout, self._idle_timeout)

    def _serialize(self, slot, close):
        response = slot.response
        status = response.status
        lines = [b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n" % (
            status, _REASONS.get(status, "Unknown").encode("ascii"), SERVER_NAME,
            self.factory.date_header())]
        for name, value in response.headers.items():
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        body = response.body
        lines.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            lines.append(b"Connection: close\r\n")
        elif slot.say_keep_alive:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if not slot.head_only:
            lines.append(body)
        return b"".join(lines)

    # -- timers --

    def _set_timer(self, seconds, what):
        # A deadline checked by the factory's sweep, not a callLater per request: two
        # timer operations per request cost more than the rest of the bookkeeping.
        self._deadline = self.factory.clock.seconds() + seconds
        self._on_deadline = what
        self.factory.watch_deadlines()

    def _cancel_timer(self):
        self._deadline = None

    def deadline_passed(self, now):
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self._on_deadline()
        stalled = self._stalled_since
        if (stalled is not None and now - stalled >= self.factory.send_timeout
                and not self._closed):
            log.debug("%s took none of our answers for %gs: dropped", self._peer,
                      self.factory.send_timeout)
            self._stalled_since = None
            self.transport.abortConnection()

    def _idle_timeout(self):
        if self.is_idle():
            self._close()

    def _request_timeout(self):
        if self._stream is not None and self._stream.paused:
            return                        # we hold the body back; resume_body re-arms
        if self._in_request:
            log.debug("request from %s timed out unfinished", self._peer)
            self._refuse(ApiError("request_timeout",
                                  "request not completed in time; connection closed"))


class _OverCapacity(HTTPChannel):
    """A connection beyond max_connections: its first request is read, answered 503
    overloaded and the connection closed. Read first, because a socket closed with
    unread bytes sends a reset, which can destroy the answer before the client reads
    it. It has REFUSING_TIMEOUT, not the usual timeouts, to send that request, and
    keeps none of its body."""

    over_capacity = True

    def _set_timer(self, seconds, what):
        super()._set_timer(min(seconds, REFUSING_TIMEOUT), what)

    def on_body(self, body):
        self._body_len += len(body)
        if self._body_len > self.factory.max_body:
            self._refuse_body()
            raise _Abort()

    def on_message_complete(self):
        self._refuse(ApiError("overloaded", "too many connections are open; retry shortly",
                              headers={"Retry-After": "1"}))
        raise _Abort()


class HTTPFactory(Factory):
    """Makes HTTPChannels for one router; holds the limits and the clock they share."""

    def __init__(self, router, *, clock=None, max_body=DEFAULT_MAX_BODY,
                 max_headers=DEFAULT_MAX_HEADERS, max_head_bytes=DEFAULT_MAX_HEAD_BYTES,
                 max_url=DEFAULT_MAX_URL, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 request_timeout=DEFAULT_REQUEST_TIMEOUT, send_timeout=DEFAULT_SEND_TIMEOUT,
                 max_connections=DEFAULT_MAX_CONNECTIONS,
                 max_pipelined=DEFAULT_MAX_PIPELINED, max_refusing=None):
        """max_refusing: connections over max_connections being answered 503 at once
        (as many again by default); beyond those a connection is closed unanswered."""
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        # A PathRouter answers later answers through the channel's callback (dispatch).
        self.dispatch = getattr(router, "dispatch", None)
        self.clock = clock
        self.max_body = max_body
        self.max_headers = max_headers
        self.max_head_bytes = max_head_bytes
        self.max_url = max_url
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.max_connections = max_connections
        self.max_pipelined = max_pipelined
        self.max_refusing = max_connections if max_refusing is None else max_refusing
        self.stopping = False
        self._connections = set()        # served channels, at most max_connections
        self._refusing = set()           # _OverCapacity channels, at most max_refusing
        self._all_gone = []
        self._date_second = None
        self._date_value = b""
        self._sweep = None
        self._cap_warned_at = None

    def buildProtocol(self, addr):
        if len(self._connections) < self.max_connections:
            return HTTPChannel(self)
        self._warn_at_capacity()
        if len(self._refusing) < self.max_refusing:
            return _OverCapacity(self)
        return None                      # the port closes it unanswered

    def _warn_at_capacity(self):
        now = self.clock.seconds()
        if self._cap_warned_at is None or now - self._cap_warned_at >= CAP_WARNING_INTERVAL_S:
            self._cap_warned_at = now
            log.warning("%d HTTP connections open, the limit (http.max_connections): "
                        "new ones are answered 503 overloaded", self.max_connections)

    def _track(self, channel):
        (self._refusing if channel.over_capacity else self._connections).add(channel)

    def watch_deadlines(self):
        """Run the once-a-second sweep of connection deadlines while any connection is open."""
        if self._sweep is None:
            self._sweep = LoopingCall(self._check_deadlines)
            self._sweep.clock = self.clock
            self._sweep.start(DEADLINE_SWEEP_S, now=False)

    def _check_deadlines(self):
        now = self.clock.seconds()
        for channel in [*self._connections, *self._refusing]:
            channel.deadline_passed(now)

    def date_header(self):
        # Formatting a date per response costs more than the rest of the head: once a second.
        second = int(self.clock.seconds())
        if second != self._date_second:
            self._date_second = second
            self._date_value = formatdate(second, usegmt=True).encode("ascii")
        return self._date_value

    def stop(self):
        """Take no new requests: idle connections close now, busy ones after answering
        what they already received (with Connection: close). Fires when all are gone."""
        self.stopping = True
        done = defer.Deferred()
        if not self._connections and not self._refusing:
            done.callback(None)
            return done
        self._all_gone.append(done)
        for channel in [*self._connections, *self._refusing]:
            channel.close_when_idle()
        return done

    def _connection_gone(self, channel):
        self._connections.discard(channel)
        self._refusing.discard(channel)
        if self._connections or self._refusing:
            return
        if self._sweep is not None:
            self._sweep.stop()
            self._sweep = None
        if self._all_gone:
            waiting, self._all_gone = self._all_gone, []
            for d in waiting:
                d.callback(None)

    @property
    def open_connections(self):
        return len(self._connections)
