"""Prometheus metrics shared by every layer; names are the operators' dashboard contract."""

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram


@lru_cache(maxsize=4096)
def child(metric, *labels):
    """metric.labels(*labels), cached: the hot path counts per message, and
    prometheus_client's labels() validates and locks on every call (~5 µs)."""
    return metric.labels(*labels)

HTTP_REQUESTS = Counter(
    "payam_http_requests_total", "Agency API requests answered", ["route", "status"])
MESSAGES_ACCEPTED = Counter(
    "payam_messages_accepted_total", "Messages durably accepted", ["agency"])
PARTS_ACCEPTED = Counter(
    "payam_parts_accepted_total", "SMS parts durably accepted", ["agency"])
SENDER_REFUSALS = Counter(
    "payam_sender_refusals_total", "Submissions refused for their sender", ["reason"])
SUBMIT_SM_SENT = Counter(
    "payam_submit_sm_total", "submit_sm PDUs sent", ["operator"])
SUBMIT_SM_RESULTS = Counter(
    "payam_submit_sm_resp_total", "submit_sm outcomes by command_status", ["operator", "status"])
RECEIPTS = Counter(
    "payam_receipts_total", "Delivery receipts received", ["operator", "state", "matched"])
INBOUND = Counter(
    "payam_inbound_pdus_total", "deliver_sm/data_sm received", ["operator", "kind"])
BOUND_SESSIONS = Gauge(
    "payam_bound_sessions", "Bound SMPP sessions", ["operator"])
QUEUE_DEPTH = Gauge(
    "payam_dispatch_buffer", "Parts claimed from the store and waiting for a bind")
COMMIT_SECONDS = Histogram(
    "payam_store_commit_seconds", "Group commit duration",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1))
MALFORMED_RESPONSES = Counter(
    "payam_smpp_malformed_responses_total",
    "Responses whose body could not be decoded (status and id salvaged)", ["operator"])
WEBHOOK_PUSHES = Counter(
    "payam_webhook_pushes_total", "Reply webhook POST outcomes (ok, retry, failed)",
    ["agency", "outcome"])
WEBHOOK_PENDING = Gauge(
    "payam_webhook_pending", "Reply webhook pushes waiting for delivery", ["agency"])
