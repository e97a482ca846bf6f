"""Fuzz targets: one function per parser, `target(data: bytes)`, that returns quietly
for any input the parser handles as designed (a value, or the error it promises) and
raises for anything else (a bug). Run them with fuzz/run.py (atheris, coverage-guided);
any crash file they leave can be replayed with `python fuzz/replay.py TARGET FILE`.

Each target imports what it exercises lazily, so fuzz_one.py can instrument those
modules (atheris.instrument_imports) before they load.
"""

import os
import shutil
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "config")


def pdu(data):
    """The SMPP decoder and framer: a PDU or PDUError/FramingError; whatever decoded
    encodes again and reads the same."""
    from gateway.smpp.pdu import Framer, FramingError, PDUError, decode, encode
    try:
        decoded = decode(data)
    except (PDUError, FramingError):
        pass
    else:
        repr(decoded)
        for tag in decoded.tlvs:
            decoded.get_tlv(tag)
        again = encode(decoded)
        assert encode(decode(again)) == again
    framer = Framer()
    step = (data[0] % 31 + 1) if data else 1
    try:
        for start in range(0, len(data), step):
            framer.feed(data[start:start + step])
    except FramingError:
        pass


_http = {}


def _http_router(clock):
    from gateway.http.errors import ApiError
    from gateway.http.server import PathRouter, json_response

    class Body:
        def __init__(self, flow):
            self.flow, self.size = flow, 0

        def data(self, chunk):
            self.size += len(chunk)
            if self.size > 50:
                raise ApiError("payload_too_large", "enough")
            if self.size % 3 == 0:
                self.flow.pause_body()
                self.flow.resume_body()

        def finish(self):
            return json_response(202, {"octets": self.size})

        def abort(self):
            pass

    def echo(request):
        return json_response(200, {"path": request.path, "length": len(request.body),
                                   "query": request.query})

    router = PathRouter(clock=clock)
    router.add("GET", "/echo", echo)
    router.add("POST", "/echo", echo)
    router.add_streamed("POST", "/stream", lambda request, flow: Body(flow))
    router.add_prefix("GET", "/items/", "/items/{id}",
                      lambda request, item: json_response(200, {"item": item}))
    return router


def http(data):
    """The HTTP/1.1 protocol: any bytes, in reads cut where the first octets say, give
    well-formed responses (never a 500) and end in a close once the timers run out."""
    import httptools
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.python import log

    from gateway.http.server import DEFAULT_IDLE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, HTTPFactory

    cuts, data = list(data[:4]), data[4:]
    # An answer to HEAD has no body, which a response parser cannot know: HEAD is
    # tested apart (tests/test_http_server.py), here it becomes another method.
    data = data.replace(b"HEAD", b"HEAP")
    errors = []
    observer = (lambda event: errors.append(event) if event.get("isError") else None)
    log.addObserver(observer)
    try:
        clock = Clock()
        factory = HTTPFactory(_http_router(clock), clock=clock, max_body=64)
        channel = factory.buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        position = 0
        for cut in cuts + [len(data)]:
            channel.dataReceived(data[position:position + cut + 1])
            position += cut + 1
            if position >= len(data):
                break
        clock.advance(DEFAULT_REQUEST_TIMEOUT + 1)
        clock.advance(DEFAULT_IDLE_TIMEOUT + 1)
        assert transport.disconnecting, "a connection left open after every timer ran"
        channel.connectionLost(None)
        factory.stop()
    finally:
        log.removeObserver(observer)
    codes = []

    class Collect:
        def on_message_complete(self):
            codes.append(parser.get_status_code())

    parser = httptools.HttpResponseParser(Collect())
    parser.feed_data(transport.value())          # raises on a malformed response
    assert 500 not in codes, transport.value()[-300:]
    assert not errors, errors


def messages_json(data):
    """POST /v1/messages bodies: a Submission or an ApiError (400)."""
    from gateway.http.errors import ApiError
    from gateway.http.validate import parse_submission
    try:
        parse_submission(data)
    except ApiError as error:
        assert error.code == "invalid_request", error.code


class _Sink:
    def __init__(self):
        self.count = 0

    def add(self, entry, where):
        self.count += 1


def broadcast_body(data):
    """POST /v1/broadcasts bodies (JSON, NDJSON, CSV), fed in pieces: only BodyError."""
    from gateway.http.broadcast_body import BodyError, JsonBody, LineBody
    if not data:
        return
    kind = ("json", "ndjson", "csv")[data[0] % 3]
    step = data[1] % 17 + 1 if len(data) > 1 else 1
    data = data[2:]
    body = JsonBody(_Sink()) if kind == "json" else LineBody(_Sink(), kind)
    try:
        for start in range(0, len(data), step):
            body.feed(data[start:start + step])
        fields = body.end()
        assert isinstance(fields, dict)
    except BodyError:
        pass


_config = {}


def _config_dir():
    """A copy of config/ (with routing_rules/) in a temporary directory, made once."""
    if "dir" not in _config:
        directory = tempfile.mkdtemp(prefix="payam-fuzz-config-")
        shutil.copytree(CONFIG, os.path.join(directory, "config"))
        shutil.copytree(os.path.join(ROOT, "routing_rules"),
                        os.path.join(directory, "routing_rules"))
        _config["dir"] = os.path.join(directory, "config")
    return _config["dir"]


def config_yaml(data):
    """gateway.yaml, agencies.yaml or a routing file with these bytes: loaded, or
    ConfigErrors, nothing else."""
    from gateway.config.load import load_agencies, load_gateway_config, load_routing
    from gateway.config.yamlnodes import ConfigErrors
    if not data:
        return
    which, data = data[0] % 3, data[1:]
    directory = _config_dir()
    name = ("gateway.yaml", "fuzzed-agencies.yaml", "fuzzed-rules.yaml")[which]
    path = os.path.join(directory, name)
    original = os.path.join(directory, "gateway.yaml") + ".orig"
    if which == 0 and not os.path.exists(original):
        shutil.copy(os.path.join(directory, "gateway.yaml"), original)
    with open(path, "wb") as file:
        file.write(data)
    try:
        if which == 0:
            load_gateway_config(path)
        elif which == 1:
            load_agencies(path)
        else:
            load_routing(path, {"mci", "irancell"})
    except ConfigErrors:
        pass


def ussd_menu(data):
    """A USSD menu file with these bytes, read against the sample agencies: menus, or
    ConfigErrors, nothing else."""
    from gateway.config.load import load_agencies, load_ussd_menus
    from gateway.config.yamlnodes import ConfigErrors
    if "agencies" not in _config:
        _config["agencies"] = load_agencies(os.path.join(CONFIG, "agencies.yaml"))
        _config["menus"] = tempfile.mkdtemp(prefix="payam-fuzz-ussd-")
    with open(os.path.join(_config["menus"], "menu.yaml"), "wb") as file:
        file.write(data)
    try:
        load_ussd_menus(_config["menus"], _config["agencies"])
    except ConfigErrors:
        pass


TARGETS = {"pdu": pdu, "http": http, "messages_json": messages_json,
           "broadcast_body": broadcast_body, "config_yaml": config_yaml,
           "ussd_menu": ussd_menu}

# Seeds: files whose bytes start each target's corpus (fuzz/run.py adds a few more).
SEEDS = {
    "config_yaml": [b"\x00" + open(os.path.join(CONFIG, "gateway.yaml"), "rb").read(),
                    b"\x01" + open(os.path.join(CONFIG, "agencies.yaml"), "rb").read()],
    "ussd_menu": [open(os.path.join(CONFIG, "ussd", name), "rb").read()
                  for name in sorted(os.listdir(os.path.join(CONFIG, "ussd")))
                  if name.endswith(".yaml")],
}
