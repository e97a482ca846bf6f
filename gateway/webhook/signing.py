"""Standard Webhooks v1 signatures: HMAC-SHA256 over "{id}.{timestamp}.{body}", keyed
with the base64-decoded secret after "whsec_", sent as `webhook-signature: v1,<b64>`."""

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret):
    """The HMAC key of a "whsec_<base64>" secret (the config loader checked its form)."""
    if secret.startswith(SECRET_PREFIX):
        secret = secret[len(SECRET_PREFIX):]
    return base64.b64decode(secret)


def signature(key, msg_id, timestamp, body):
    """'v1,<base64 HMAC-SHA256>' of the message; body: bytes (UTF-8 JSON)."""
    signed = f"{msg_id}.{int(timestamp)}.".encode("utf-8") + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(key, msg_id, timestamp, body):
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": signature(key, msg_id, timestamp, body),
            "content-type": "application/json"}
