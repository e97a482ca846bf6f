"""API errors as data: one exception type, one place that shapes the error document.

Every refusal the agency API gives is `{"error": {"code": ..., "message": ...}}` with the
HTTP status the contract fixes for the code; handlers raise `ApiError` and the router
turns it into a response. The accept path's refusals (gateway.outbound.errors) become
ApiErrors here, in `api_error`, and nowhere else.
"""

from gateway.national_inbox import errors as citizen_refusals
from gateway.outbound import errors as refusals

# code -> HTTP status (CONTRACT.md, "Agency HTTP API"), plus the HTTP layer's own codes.
STATUS_FOR_CODE = {
    "invalid_request": 400,
    "invalid_number": 400,
    "invalid_national_id": 400,
    "text_too_long": 400,
    "unauthorized": 401,
    "sender_not_allowed": 403,
    "link_not_allowed": 403,
    "identity_mismatch": 403,
    "invalid_national_id": 400,
    "directory_unavailable": 503,
    "not_found": 404,
    "method_not_allowed": 405,
    "idempotency_mismatch": 409,
    "request_timeout": 408,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "uri_too_long": 414,
    "unsupported_media_type": 415,
    "headers_too_large": 431,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "internal_error": 500,
    "overloaded": 503,
    "directory_unavailable": 503,
}


class ApiError(Exception):
    """A refusal for the client: a contract error code, a human message, extra headers
    (e.g. Retry-After). The status defaults to the one the contract fixes for the code."""

    def __init__(self, code, message, status=None, headers=None):
        if code not in STATUS_FOR_CODE and status is None:
            raise ValueError(f"unknown API error code {code!r} needs an explicit status")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status if status is not None else STATUS_FOR_CODE[code]
        self.headers = dict(headers) if headers else {}


def error_document(code, message):
    """The JSON object of every error answer."""
    return {"error": {"code": code, "message": message}}


# What each refusal of the accept path is called in the contract.
CODE_FOR_REFUSAL = {
    refusals.SenderRefused: "sender_not_allowed",
    refusals.InvalidRecipients: "invalid_number",
    refusals.TooManyParts: "text_too_long",
    refusals.LinkRefused: "link_not_allowed",
    refusals.UnsendableText: "invalid_request",
    refusals.OverRate: "rate_limited",
    refusals.OverQuota: "quota_exceeded",
    refusals.Overloaded: "overloaded",
    refusals.IdempotencyConflict: "idempotency_mismatch",
    refusals.InvalidBroadcast: "invalid_request",
    refusals.TooManyRecipients: "payload_too_large",
    refusals.FallbackRefused: "invalid_request",
    refusals.InvalidNationalIds: "invalid_national_id",
    refusals.NoDirectory: "invalid_request",
    refusals.DirectoryDown: "directory_unavailable",
}


def api_error(refusal):
    """The ApiError for a gateway.outbound Refusal: its code, its message, and a
    Retry-After when waiting helps."""
    headers = ({"Retry-After": str(refusal.retry_after)}
               if refusal.retry_after is not None else None)
    return ApiError(CODE_FOR_REFUSAL[type(refusal)], refusal.message, headers=headers)


# What each refusal of the national inbox (partner apps) is called in the contract.
CODE_FOR_CITIZEN_REFUSAL = {
    citizen_refusals.IdentityMismatch: "identity_mismatch",
    citizen_refusals.DirectoryDown: "directory_unavailable",
    citizen_refusals.MessageNotFound: "not_found",
}


def citizen_error(refusal):
    """The ApiError for a gateway.national_inbox CitizenRefusal."""
    headers = ({"Retry-After": str(refusal.retry_after)}
               if refusal.retry_after is not None else None)
    return ApiError(CODE_FOR_CITIZEN_REFUSAL[type(refusal)], refusal.message,
                    headers=headers)
