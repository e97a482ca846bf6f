"""An inbox message as agencies see it: the contract's object, the same in
`GET /v1/inbox` and in the reply webhook's body."""

from datetime import datetime, timezone


def iso_time(timestamp):
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def inbox_document(message):
    """{"id", "from", "to", "text", "received_at", "in_reply_to", "channel"} of an
    InboxMessage: `from` is the citizen's number, `to` the agency's number."""
    return {"id": message.id, "from": message.citizen, "to": message.number,
            "text": message.text, "received_at": iso_time(message.received_at),
            "in_reply_to": message.in_reply_to, "channel": message.channel}
