"""POST /v1/broadcasts (a streamed body), GET and DELETE /v1/broadcasts/{id}.

Thin: the body is parsed as it arrives (broadcast_body.py) into the broadcast use case
(gateway.outbound.broadcast), whose refusals become the contract's error codes here.
"""

import re

from gateway.http.broadcast_body import BodyError, JsonBody, LineBody
from gateway.http.errors import ApiError, api_error
from gateway.http.server import json_response
from gateway.http.validate import DEFAULT_VALIDITY_S, MAX_VALIDITY_S, MIN_VALIDITY_S, PRIORITIES
from gateway.outbound.broadcast import BroadcastText
from gateway.outbound.errors import Refusal

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MEDIA = {"application/json": "json", "application/x-ndjson": "ndjson",
          "text/csv": "csv"}
_JSON_FIELDS = {"from", "text", "priority", "validity_s", "receipt", "to"}
_QUERY_FIELDS = {"from", "text", "priority", "validity_s", "receipt"}


def media_kind(headers):
    """json | ndjson | csv from the Content-Type (no type: JSON), else 415."""
    given = headers.get("content-type", "application/json")
    kind = _MEDIA.get(given.split(";", 1)[0].strip().lower())
    if kind is None:
        raise ApiError("unsupported_media_type",
                       "a broadcast body is application/json, application/x-ndjson or "
                       "text/csv")
    return kind


def broadcast_text(fields, where):
    """The BroadcastText of the JSON members or query parameters `fields`."""
    def bad(message):
        return ApiError("invalid_request", f"{where}: {message}")

    for name in ("from", "text"):
        value = fields.get(name)
        if not isinstance(value, str) or not value:
            raise bad(f"'{name}' must be a non-empty string")
        if _SURROGATE.search(value):
            raise bad(f"'{name}' holds a lone surrogate")
    priority = fields.get("priority", "normal")
    if priority not in PRIORITIES:
        raise bad("'priority' must be one of: normal, high, emergency")
    validity = fields.get("validity_s", DEFAULT_VALIDITY_S)
    if isinstance(validity, str) and validity.isdigit():
        validity = int(validity)
    if (not isinstance(validity, int) or isinstance(validity, bool)
            or not MIN_VALIDITY_S <= validity <= MAX_VALIDITY_S):
        raise bad(f"'validity_s' must be a whole number of seconds from {MIN_VALIDITY_S} "
                  f"to {MAX_VALIDITY_S}")
    receipt = fields.get("receipt", True)
    receipt = {"true": True, "false": False}.get(receipt, receipt)
    if not isinstance(receipt, bool):
        raise bad("'receipt' must be true or false")
    return BroadcastText(fields["from"], fields["text"], PRIORITIES[priority], validity,
                         receipt)


class BroadcastUpload:
    """The streamed body's consumer (server.PathRouter.add_streamed)."""

    def __init__(self, intake, kind):
        self.intake = intake
        self.kind = kind
        self.body = (JsonBody(intake, _JSON_FIELDS) if kind == "json"
                     else LineBody(intake, kind))

    def data(self, chunk):
        try:
            self.body.feed(chunk)
        except BodyError as error:
            raise ApiError("invalid_request", str(error)) from None
        except Refusal as refusal:
            raise api_error(refusal) from None

    def finish(self):
        try:
            fields = self.body.end()
            if self.kind == "json":     # unknown members: refused by JsonBody
                self.intake.set_text(broadcast_text(fields, "body"))
            d = self.intake.finish()
        except BodyError as error:
            self.intake.abort()
            raise ApiError("invalid_request", str(error)) from None
        except Refusal as refusal:
            self.intake.abort()
            raise api_error(refusal) from None
        except Exception:
            self.intake.abort()
            raise
        d.addCallbacks(lambda document: json_response(202, document), _refused)
        return d

    def abort(self):
        self.intake.abort()


def _refused(failure):
    failure.trap(Refusal)
    raise api_error(failure.value)


class BroadcastRoutes:
    """The handlers; `authenticate(request)` → the agency (AgencyAPI's)."""

    def __init__(self, broadcasts, authenticate):
        self.broadcasts = broadcasts
        self.authenticate = authenticate

    def register(self, router):
        router.add_streamed("POST", "/v1/broadcasts", self.post)
        router.add_prefix("GET", "/v1/broadcasts/", "/v1/broadcasts/{id}", self.get)
        router.add_prefix("DELETE", "/v1/broadcasts/", "/v1/broadcasts/{id}", self.cancel)

    def _available(self):
        if self.broadcasts is None:
            raise ApiError("overloaded", "broadcasts are not available",
                           headers={"Retry-After": "1"})
        return self.broadcasts

    def post(self, request, flow):
        agency = self.authenticate(request)
        broadcasts = self._available()
        kind = media_kind(request.headers)
        text = None
        try:
            if kind != "json":
                unknown = set(request.query) - _QUERY_FIELDS
                if unknown:
                    raise ApiError("invalid_request",
                                   f"unknown parameters: {', '.join(sorted(unknown))}")
                text = broadcast_text(request.query, "query")
            intake = broadcasts.begin(agency, flow, text, request.peer)
        except Refusal as refusal:
            raise api_error(refusal) from None
        return BroadcastUpload(intake, kind)

    def get(self, request, broadcast_id):
        agency = self.authenticate(request)
        return self._answer(self._available().get, agency, broadcast_id)

    def cancel(self, request, broadcast_id):
        agency = self.authenticate(request)
        return self._answer(self._available().cancel, agency, broadcast_id)

    @staticmethod
    def _answer(action, agency, broadcast_id):
        if not _ID.fullmatch(broadcast_id):
            raise ApiError("not_found", "no such broadcast")
        d = action(agency, broadcast_id)

        def answer(found):
            if found is None:
                raise ApiError("not_found", "no such broadcast")
            return json_response(200, found)

        d.addCallback(answer)
        return d


