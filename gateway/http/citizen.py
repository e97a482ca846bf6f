"""The partner apps' API (national inbox): GET /v1/citizen/messages and POST
/v1/citizen/replies, on app keys only (apps.yaml; an agency's key is unknown here).

Each handler: the app's key (401; 429 while the address is blocked for bad keys), the
app's request rate (429), the request read (400), then the national inbox
(gateway.national_inbox: the directory's identity check first, 403 / 503) and the
answer.  Reading and checking live in citizen_requests.py, refusals' codes in
errors.py.
"""

import logging

from twisted.python.failure import Failure

from gateway.http.citizen_requests import encode_cursor, messages_query, reply_body
from gateway.http.errors import ApiError, citizen_error
from gateway.http.server import json_response
from gateway.http.validate import require_json
from gateway.inbox.document import inbox_document
from gateway.national_inbox.document import citizen_message_document
from gateway.national_inbox.errors import CitizenRefusal
from gateway.policy.limits import RateLimited

log = logging.getLogger("payam.api.citizen")

MESSAGES_PATH = "/v1/citizen/messages"
REPLIES_PATH = "/v1/citizen/replies"


class CitizenRoutes:
    def __init__(self, national_inbox, authenticate_app, limits, agencies):
        """national_inbox: gateway.national_inbox.desk.NationalInbox; authenticate_app
        (request) → the App or ApiError; limits: AppRequestLimits; agencies() → the
        agencies now configured (their names)."""
        self.national_inbox = national_inbox
        self.authenticate_app = authenticate_app
        self.limits = limits
        self.agencies = agencies

    def register(self, router):
        router.add("GET", MESSAGES_PATH, self.messages)
        router.add("POST", REPLIES_PATH, self.reply)

    def _admit(self, request):
        app = self.authenticate_app(request)
        try:
            self.limits.admit(app)
        except RateLimited as limited:
            raise ApiError("rate_limited",
                           f"this app's request rate is used up; retry after "
                           f"{limited.retry_after} s",
                           headers={"Retry-After": str(limited.retry_after)}) from None
        return app

    def messages(self, request):
        app = self._admit(request)
        national_id, msisdn, before, limit = messages_query(request.query)
        d = self.national_inbox.messages(app, national_id, msisdn, before, limit,
                                         request.peer)
        d.addBoth(self._messages_answer)
        return d

    def _messages_answer(self, result):
        if isinstance(result, Failure):
            _refused(result)
        page, after = result
        names = {agency.id: agency.name for agency in self.agencies()}
        return json_response(200, {
            "messages": [citizen_message_document(m, names) for m in page],
            "next": None if after is None else encode_cursor(*after)})

    def reply(self, request):
        app = self._admit(request)
        require_json(request.headers.get("content-type"), request.body)
        national_id, msisdn, in_reply_to, text, key = reply_body(request.body)
        d = self.national_inbox.reply(app, national_id, msisdn, in_reply_to, text,
                                      request.peer, idempotency_key=key)
        d.addBoth(_reply_answer)
        return d


def _reply_answer(result):
    if isinstance(result, Failure):
        _refused(result)
    return json_response(201, inbox_document(result))


def _refused(failure):
    """A national inbox failure as the ApiError the router answers."""
    if failure.check(CitizenRefusal):
        raise citizen_error(failure.value)
    if failure.check(ApiError):
        failure.raiseException()
    log.error("national inbox request failed: %s", failure.getErrorMessage())
    raise ApiError("overloaded", "the store cannot be used right now; retry shortly",
                   headers={"Retry-After": "1"})
