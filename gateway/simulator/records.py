"""The simulator's memory of accepted submit_sm / data_sm, for the control API and tests.

Recording sits on the hot path (every accepted submit), so it only keeps the raw frame
in a bounded ring; decoding into a readable dict happens when someone asks, once.
"""

from collections import deque

from gateway.smpp import constants
from gateway.smpp.pdu import decode
from gateway.text import decode_short_message


_NUMERIC_FIELDS = ("source_addr_ton", "source_addr_npi", "dest_addr_ton", "dest_addr_npi",
                   "esm_class", "protocol_id", "priority_flag", "registered_delivery",
                   "data_coding")
_STRING_FIELDS = ("service_type", "source_addr", "destination_addr",
                  "schedule_delivery_time", "validity_period")


class SubmitRecords:
    """A ring of the last `capacity` accepted submits, each with a running index from 1."""

    def __init__(self, capacity=100_000):
        if capacity < 1:
            raise ValueError(f"record capacity must be >= 1, not {capacity}")
        self._ring = deque(maxlen=capacity)
        self.total = 0

    def add(self, frame, system_id, operator, message_id, received_at) -> None:
        self.total += 1
        # A list, not a tuple: slot 5 caches the rendered dict on first read.
        self._ring.append([self.total, frame, system_id, operator, message_id,
                           received_at, None])

    def clear(self) -> None:
        self._ring.clear()
        self.total = 0

    def __len__(self):
        return len(self._ring)

    def after(self, index, limit) -> list:
        """Rendered records with a running index above `index`, oldest first, at most
        `limit` of them. Records that fell out of the ring are simply absent."""
        if not self._ring:
            return []
        first = self._ring[0][0]
        start = max(0, index + 1 - first)
        out = []
        for position in range(start, min(len(self._ring), start + limit)):
            slot = self._ring[position]
            if slot[6] is None:
                slot[6] = render(*slot[:6])
            out.append(slot[6])
        return out


def render(index, frame, system_id, operator, message_id, received_at) -> dict:
    """One recorded submit as plain JSON-ready values."""
    pdu = decode(frame)
    fields = pdu.fields
    record = {
        "index": index,
        "command": pdu.name,
        "operator": operator,
        "system_id": system_id,
        "sequence": pdu.sequence,
        "message_id": message_id,
        "received_at": received_at,
    }
    for name in _STRING_FIELDS:
        record[name] = fields.get(name, "")
    for name in _NUMERIC_FIELDS:
        record[name] = fields.get(name, 0)
    payload = fields.get("short_message") or b""
    if not payload:
        # data_sm (and long submit_sm) carry the text in message_payload instead.
        payload = pdu.tlvs.get(constants.TLV_MESSAGE_PAYLOAD, b"")
    record["short_message"] = bytes(payload).hex()
    record.update(_text_of(payload, record["data_coding"], record["esm_class"]))
    record["tlvs"] = {f"0x{tag:04X}": bytes(value).hex() for tag, value in pdu.tlvs.items()}
    return record


def _text_of(payload, data_coding, esm_class) -> dict:
    try:
        decoded = decode_short_message(bytes(payload), data_coding,
                                       bool(esm_class & constants.ESM_CLASS_UDHI))
    except ValueError as exc:
        return {"text": None, "text_error": str(exc), "concat": None}
    concat = decoded.concat
    return {
        "text": decoded.text,
        "concat": None if concat is None else
        {"ref": concat.ref, "total": concat.total, "seq": concat.seq},
    }
