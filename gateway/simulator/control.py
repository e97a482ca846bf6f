"""The simulator's JSON control API, on loopback, for tests and the demo.

    GET  /submits?after=N&limit=M   recorded submits with a running index above N
    GET  /stats                     counters and bound sessions
    GET  /behaviour                 current behaviour
    POST /behaviour                 JSON merge into the behaviour (unknown keys → 400;
                                     the settings: behaviour.Behaviour, e.g.
                                     {"malformed_every": 5})
    POST /mo                        {from, to, text, ussd_op?, its_session_info?,
                                     service_type?, system_id?, concat? (udh8 | udh16 |
                                     sar), command? (deliver_sm | data_sm), order? (part
                                     numbers), repeat? (parts sent again)} → statuses
    POST /mo-batch                  {messages: [MO, ...]} (at most 1000) → their statuses
    POST /ussd/dial                 {from, code, op?, its_session_info?, dial_field?,
                                     system_id?} → the ESME's answer {text, op, end, ...}
    POST /ussd/send                 {from, text, op?} → the answer to the citizen's input
    POST /ussd/abort                {from, op?} → the deliver_sm_resp status
    GET  /ussd/last?msisdn=…        answers to that MSISDN nobody waited for (last few)
    POST /reset                     forget recorded submits, zero the counters

Not on any hot path, so a plain twisted.web Resource is enough.
"""

import json
import logging

from twisted.internet import defer
from twisted.web import resource, server

from gateway.simulator.behaviour import BehaviourError
from gateway.simulator.smsc import NoReceiver, SessionGone
from gateway.text import TextTooLong

log = logging.getLogger("payam.simulator.control")

MAX_LIMIT = 100_000
MAX_BODY = 1 << 20
MO_TIMEOUT_S = 10.0           # an ESME that never answers the deliver_sm
MAX_MO_BATCH = 1000


class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class ControlResource(resource.Resource):
    isLeaf = True

    def __init__(self, factory, mo_timeout_s=MO_TIMEOUT_S):
        super().__init__()
        self.factory = factory
        self.mo_timeout_s = mo_timeout_s
        self.routes = {
            (b"GET", b"/submits"): self.get_submits,
            (b"GET", b"/stats"): self.get_stats,
            (b"GET", b"/behaviour"): self.get_behaviour,
            (b"POST", b"/behaviour"): self.post_behaviour,
            (b"POST", b"/mo"): self.post_mo,
            (b"POST", b"/mo-batch"): self.post_mo_batch,
            (b"POST", b"/reset"): self.post_reset,
            (b"POST", b"/ussd/dial"): self.post_ussd_dial,
            (b"POST", b"/ussd/send"): self.post_ussd_send,
            (b"POST", b"/ussd/abort"): self.post_ussd_abort,
            (b"GET", b"/ussd/last"): self.get_ussd_last,
        }

    def render(self, request):
        path = request.path.rstrip(b"/") or b"/"
        handler = self.routes.get((request.method, path))
        try:
            if handler is None:
                known = {p for _, p in self.routes}
                if path in known:
                    raise ControlError(405, f"method {request.method.decode()} not allowed here")
                raise ControlError(404, f"no such control endpoint: {path.decode('latin-1')}")
            result = handler(request)
        except ControlError as exc:
            return self._json(request, exc.status, {"error": str(exc)})
        if isinstance(result, defer.Deferred):
            gone = []
            request.notifyFinish().addErrback(lambda _: gone.append(True))
            result.addCallbacks(
                lambda body: self._finish(request, 200, body, gone),
                lambda failure: self._finish_failure(request, failure, gone))
            return server.NOT_DONE_YET
        return self._json(request, 200, result)

    # -- endpoints ----------------------------------------------------------------------

    def get_submits(self, request):
        after = _int_arg(request, b"after", 0, minimum=0)
        limit = _int_arg(request, b"limit", 1000, minimum=1, maximum=MAX_LIMIT)
        submits = self.factory.records.after(after, limit)
        return {"submits": submits, "total": self.factory.records.total,
                "last": submits[-1]["index"] if submits else after}

    def get_stats(self, request):
        return self.factory.stats()

    def get_behaviour(self, request):
        return self.factory.behaviour.as_dict()

    def post_behaviour(self, request):
        try:
            self.factory.apply_behaviour(_json_body(request))
        except BehaviourError as exc:
            raise ControlError(400, str(exc)) from None
        log.info("behaviour changed: %s", self.factory.behaviour.as_dict())
        return self.factory.behaviour.as_dict()

    def post_mo(self, request):
        return self._inject(_json_body(request))

    def post_mo_batch(self, request):
        """{"messages": [MO, ...]} (at most MAX_MO_BATCH): all injected at once, for
        load tests; → {"statuses": [[...], ...]} in the same order."""
        body = _json_body(request)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MO_BATCH:
            raise ControlError(400, f"expected {{\"messages\": [1..{MAX_MO_BATCH} MO]}}")
        answers = [self._inject(mo) for mo in messages]
        d = defer.gatherResults(answers, consumeErrors=True)
        d.addCallback(lambda results: {"statuses": [r["statuses"] for r in results]})
        d.addErrback(lambda failure: failure.value.subFailure)
        return d

    def _inject(self, body):
        if not isinstance(body, dict):
            raise ControlError(400, "MO request must be a JSON object")
        missing = [key for key in ("from", "to", "text") if key not in body]
        if missing:
            raise ControlError(400, f"MO request lacks: {', '.join(missing)}")
        unknown = set(body) - {"from", "to", "text", "ussd_op", "its_session_info",
                               "service_type", "system_id", "concat", "command", "order",
                               "repeat"}
        if unknown:
            raise ControlError(400, f"unknown MO field(s): {', '.join(sorted(unknown))}")
        system_id = body.get("system_id")
        if system_id is not None and not isinstance(system_id, str):
            raise ControlError(400, "system_id must be a string")
        try:
            answered = self.factory.inject_mo(
                body["from"], body["to"], body["text"], ussd_op=body.get("ussd_op"),
                its_session_info=body.get("its_session_info"),
                service_type=body.get("service_type", ""), system_id=system_id,
                concat=body.get("concat", "udh8"), command=body.get("command", "deliver_sm"),
                order=body.get("order"), repeat=body.get("repeat", []))
        except (ValueError, TypeError, TextTooLong) as exc:
            raise ControlError(400, str(exc)) from None
        answered.addTimeout(self.mo_timeout_s, self.factory.reactor)
        answered.addCallback(lambda statuses: {"statuses": statuses, "parts": len(statuses)})
        return answered

    def post_ussd_dial(self, request):
        body = _object(request, ("from", "code"), ("op", "its_session_info", "dial_field",
                                                    "system_id"))
        return self._ussd(lambda ussd: ussd.dial(
            body["from"], body["code"], op=body.get("op", 1),
            its_session_info=body.get("its_session_info", True),
            dial_field=body.get("dial_field", "short_message"),
            system_id=body.get("system_id")))

    def post_ussd_send(self, request):
        body = _object(request, ("from", "text"), ("op",))
        return self._ussd(lambda ussd: ussd.send(body["from"], body["text"],
                                                 op=body.get("op", 18)))

    def post_ussd_abort(self, request):
        body = _object(request, ("from",), ("op",))
        return self._ussd(lambda ussd: ussd.abort(body["from"], op=body.get("op", 0x81)))

    def get_ussd_last(self, request):
        msisdn = (request.args.get(b"msisdn") or [b""])[0].decode("latin-1")
        return {"answers": self.factory.ussd.last(msisdn)}

    def _ussd(self, call):
        try:
            answered = call(self.factory.ussd)
        except (ValueError, TypeError, TextTooLong) as exc:
            raise ControlError(400, str(exc)) from None
        answered.addTimeout(self.mo_timeout_s, self.factory.reactor)
        return answered

    def post_reset(self, request):
        self.factory.reset()
        return {"reset": True}

    # -- output -------------------------------------------------------------------------

    def _finish_failure(self, request, failure, gone):
        if failure.check(NoReceiver):
            status = 409
        elif failure.check(SessionGone):
            status = 502
        elif failure.check(defer.TimeoutError):
            status = 504
        else:
            log.error("control request failed: %s", failure.getTraceback())
            status = 500
        self._finish(request, status, {"error": failure.getErrorMessage()
                                       or failure.type.__name__}, gone)

    def _finish(self, request, status, body, gone):
        if gone:
            return                       # the client went away meanwhile
        request.write(self._json(request, status, body))
        request.finish()

    @staticmethod
    def _json(request, status, body):
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
        return json.dumps(body, ensure_ascii=False).encode("utf-8")


def _object(request, required, optional):
    body = _json_body(request)
    if not isinstance(body, dict):
        raise ControlError(400, "expected a JSON object")
    missing = [key for key in required if not isinstance(body.get(key), str)]
    if missing:
        raise ControlError(400, f"needs string field(s): {', '.join(missing)}")
    unknown = set(body) - set(required) - set(optional)
    if unknown:
        raise ControlError(400, f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


def _int_arg(request, name, default, minimum=None, maximum=None):
    values = request.args.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise ControlError(400, f"{name.decode()} must be an integer") from None
    if minimum is not None and value < minimum:
        raise ControlError(400, f"{name.decode()} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ControlError(400, f"{name.decode()} must be <= {maximum}")
    return value


def _json_body(request):
    raw = request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ControlError(413, f"body larger than {MAX_BODY} bytes")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlError(400, f"body is not JSON: {exc}") from None


def control_site(factory) -> server.Site:
    site = server.Site(ControlResource(factory))
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None      # no access log: tests poll this API in tight loops
    return site
