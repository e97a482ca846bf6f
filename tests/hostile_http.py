"""A hostile HTTP client: raw sockets on loopback, one function per misbehaviour.

Blocking code, meant to run in a thread beside the reactor under test (trial tests use
threads.deferToThread) or from a measurement script against a daemon. Every function
bounds itself in time; none depends on how fast the machine is to give its answer,
only to finish sooner.

Misbehaviours: pipelining without reading, half-closing after the request, heads split
at any byte, requests without Host, JSON with duplicate keys or lone surrogates, many
connections at once, a flood of bad keys.
"""

import json
import select
import socket
import time

import httptools

HOST = "127.0.0.1"


# -- requests ------------------------------------------------------------------------

def request(method, path, body=b"", headers=(), host=b"t", version=b"1.1"):
    """The bytes of one request. `host=None` leaves Host out; body bytes get a
    Content-Length."""
    lines = [b"%s %s HTTP/%s\r\n" % (method.encode(), path.encode(), version)]
    if host is not None:
        lines.append(b"Host: " + host + b"\r\n")
    for name, value in headers:
        lines.append(name.encode() + b": " + value.encode() + b"\r\n")
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines) + body


def post_json(path, document, key=None, **options):
    """A POST of `document`: a dict is dumped with json.dumps (ASCII escapes, so lone
    surrogates survive as \\udxxx), bytes are sent as they are."""
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    headers = [("Content-Type", "application/json")]
    if key is not None:
        headers.append(("Authorization", f"Bearer {key}"))
    return request("POST", path, body, headers, **options)


def message(key, sender="40401234", to="09121234567", text="x", **fields):
    return post_json("/v1/messages", {"from": sender, "to": to, "text": text, **fields}, key)


def duplicate_key_body(name="to", first="09121234567", second="09351234567"):
    """A JSON object naming one field twice: a parser keeping the last value would send
    to a number the first reader of the body never saw."""
    return (b'{"from": "40401234", "%s": "%s", "text": "x", "%s": "%s"}'
            % (name.encode(), first.encode(), name.encode(), second.encode()))


def surrogate_body(field):
    """A submission whose `field` holds a lone surrogate (\\ud800): valid JSON, not valid
    Unicode."""
    document = {"from": "40401234", "to": "09121234567", "text": "x"}
    document[field] = "bad\ud800" if field != "to" else ["0912\ud8001234567"]
    return json.dumps(document).encode()


# -- responses -----------------------------------------------------------------------

class Responses:
    """An incremental HTTP response parser: .items holds (status, headers, body)."""

    def __init__(self):
        self.items = []
        self._parser = httptools.HttpResponseParser(self)
        self._headers = {}
        self._body = []

    def feed(self, data):
        self._parser.feed_data(data)

    def on_header(self, name, value):
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body):
        self._body.append(body)

    def on_message_complete(self):
        self.items.append((self._parser.get_status_code(), self._headers,
                           b"".join(self._body)))
        self._headers, self._body = {}, []

    @property
    def statuses(self):
        return [status for status, _, _ in self.items]

    def codes(self):
        """The error code of every answer (None for a non-error answer)."""
        out = []
        for _, _, body in self.items:
            try:
                out.append(json.loads(body)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                out.append(None)
        return out


def connect(port, timeout=5.0):
    sock = socket.create_connection((HOST, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_until_closed(sock, responses, deadline, want=None):
    """Feed what arrives to `responses` until the server closes, `want` responses are
    in, or the deadline passes. True if the server closed."""
    while time.monotonic() < deadline:
        if want is not None and len(responses.items) >= want:
            return False
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
        responses.feed(data)
    return False


def exchange(port, data, want=None, timeout=5.0):
    """Send `data` on a new connection, read until closed (or `want` answers): the
    Responses and whether the server closed."""
    responses = Responses()
    with connect(port, timeout) as sock:
        sock.sendall(data)
        closed = read_until_closed(sock, responses, time.monotonic() + timeout, want)
    return responses, closed


# -- misbehaviours -------------------------------------------------------------------

def pipeline(port, requests, timeout=10.0):
    """Send every request back to back on one connection while reading what comes back
    (a well-behaved pipeliner, so the server's back-pressure cannot deadlock us).
    The Responses and whether the server closed."""
    data = memoryview(b"".join(requests))
    responses = Responses()
    deadline = time.monotonic() + timeout
    closed = False
    with connect(port, timeout) as sock:
        sock.setblocking(False)
        while time.monotonic() < deadline and len(responses.items) < len(requests):
            writing = [sock] if data else []
            readable, writable, _ = select.select([sock], writing, [], 0.05)
            if writable:
                try:
                    data = data[sock.send(data[:65536]):]
                except BlockingIOError:
                    pass
                except OSError:
                    data = memoryview(b"")
            if readable:
                try:
                    chunk = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    closed = True
                    break
                if not chunk:
                    closed = True
                    break
                responses.feed(chunk)
    return responses, closed


def pipeline_without_reading(port, one_request, seconds=2.0, window=None, burst=16384,
                             pace=0.0):
    """Pipeline `one_request` over and over and never read an answer (SO_RCVBUF kept
    small so the answers pile up on the server, not in our kernel). Returns
    (bytes the server took, whether it cut us off) after `seconds`; `pace` seconds
    between bursts keep the server's reads from merging them.

    A server with back-pressure stops reading once it cannot write: what it took then
    stays small, and it drops the connection after its send timeout."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, window or 4096)
    sock.settimeout(5)
    sock.connect((HOST, port))
    sock.setblocking(False)
    # Bursts of whole requests, well under one server read: the server sees heads cut
    # by its own reads only, not by us.
    burst = one_request * max(1, burst // len(one_request))
    pending = memoryview(b"")
    taken = 0
    cut_off = False
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            _, writable, errored = select.select([], [sock], [sock], 0.05)
            if errored:
                cut_off = True
                break
            if not writable:
                continue
            if not pending:
                if pace and taken:
                    time.sleep(pace)          # keep the server's reads apart
                pending = memoryview(burst)
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                continue
            except OSError:
                cut_off = True
                break
            taken += sent
            pending = pending[sent:]
    finally:
        sock.close()
    return taken, cut_off


def half_close(port, data, timeout=5.0):
    """Send `data`, shut our writing side (SHUT_WR) and read until the server closes:
    the Responses and whether it closed."""
    responses = Responses()
    with connect(port, timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        closed = read_until_closed(sock, responses, time.monotonic() + timeout)
    return responses, closed


def trickle(port, data, cuts, pause=0.002, timeout=5.0):
    """Send `data` in pieces cut at the byte offsets `cuts`, pausing between them (so
    the server reads them apart), then read until closed."""
    responses = Responses()
    with connect(port, timeout) as sock:
        start = 0
        for cut in sorted(cuts) + [len(data)]:
            if cut > start:
                sock.sendall(data[start:cut])
                start = cut
                time.sleep(pause)
        closed = read_until_closed(sock, responses, time.monotonic() + timeout)
    return responses, closed


def many_connections(port, count, data, timeout=10.0):
    """Open `count` connections and keep them all open, each sending `data` once; then
    read one answer from each. The list of Responses, in connection order (an empty
    Responses for a connection refused or reset without an answer)."""
    socks, results = [], []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(count):
            try:
                sock = connect(port, timeout)
            except OSError:
                sock = None
            socks.append(sock)
            if sock is not None:
                try:
                    sock.sendall(data)
                except OSError:
                    pass
        for sock in socks:
            responses = Responses()
            if sock is not None:
                try:
                    read_until_closed(sock, responses, deadline, want=1)
                except OSError:
                    pass
            results.append(responses)
    finally:
        for sock in socks:
            if sock is not None:
                sock.close()
    return results


def bad_key_flood(port, count, good_key=None, timeout=20.0):
    """`count` requests with guessed keys, pipelined on keep-alive connections; then,
    if given, one request with a good key from the same address. The Responses of the
    flood and the status of that last request (None without it)."""
    guesses = [message(f"guess-{i:08d}-xxxxxxxxxxxxxxxx") for i in range(count)]
    responses = Responses()
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < count and time.monotonic() < deadline:
        batch, closed = pipeline(port, guesses[sent:sent + 500], deadline - time.monotonic())
        responses.items.extend(batch.items)
        sent += max(1, len(batch.items))
    last = None
    if good_key is not None:
        answer, _ = exchange(port, message(good_key, **{"text": "after the flood"}), want=1)
        last = answer.statuses[0] if answer.items else None
    return responses, last
