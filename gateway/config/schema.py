"""The configuration as frozen values: what every layer below the service is handed.

Built only by `gateway.config.load` (its readers, one per file), which has checked every
field: the components take them as given. Tuples, not lists, so a running component can
never see its configuration change under it.
"""

from dataclasses import dataclass

BIND_MODES = ("transceiver", "transmitter+receiver")
# How receipts write the submit_sm_resp id (gateway.receipt_ids.ID_BASES), or "auto":
# learned per operator from the first unambiguous matches, then fixed.
RECEIPT_ID_MODES = ("auto", "raw", "dec", "hex")
DEFAULT_HTTP_MAX_CONNECTIONS = 1024       # beyond it new connections are answered 503


@dataclass(frozen=True)
class OperatorConfig:
    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    bind: str = "transceiver"                       # one of BIND_MODES
    binds: int = 1                                  # parallel sessions
    window: int = 100                               # outstanding submit_sm per session
    tps: float = 500.0                              # operator's limit, all binds together
    enquire_link_s: float = 30.0
    reconnect_s: tuple[float, float] = (1.0, 30.0)  # backoff from, to
    receipts: bool = True
    response_timeout_s: float = 30.0
    short_code_ton: int = 3                         # 4040 senders: network-specific
    short_code_npi: int = 0
    max_unknown_outcomes: int = 3                   # sends without an answer, then failed
    receipt_ids: str = "auto"                       # one of RECEIPT_ID_MODES


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str                          # "whsec_" + base64 of >= 24 bytes (Standard Webhooks)


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    keys: tuple[str, ...]                # "sha256:<64 lowercase hex>" each
    numbers: tuple[str, ...]             # "4040…" short codes
    masks: tuple[str, ...]               # alphanumeric senders, as configured
    ussd_code: str | None                # "*4*0135#"
    rate_per_s: float                    # parts per second
    daily_parts: int                     # quota in parts per day
    reply_webhook: Webhook | None
    opt_out: bool = False                # may citizens opt out with STOP / لغو
    help_text: str | None = None         # the HELP answer ({name}, {number}); None: default


@dataclass(frozen=True)
class RoutingRule:
    prefixes: tuple[str, ...]            # "98912", international form
    operator: str
    fallback: tuple[str, ...]            # used in order while `operator` has no session
    origin: str                          # "file:line" of the rule, for logs


@dataclass(frozen=True)
class Routing:
    rules: tuple[RoutingRule, ...]       # first match wins
    default: str | None


@dataclass(frozen=True)
class Retention:
    """Days each kind of record is kept before housekeeping purges it."""
    messages: float = 30.0       # ended messages, with their parts and receipt keys
    audit: float = 365.0         # audit rows (refused senders, ...)
    receipts: float = 3.0        # receipts that matched no part (yet)
    inbound: float = 30.0        # raw inbound PDUs as received
    inbox: float = 30.0          # citizens' replies in the agencies' inboxes


@dataclass(frozen=True)
class GatewayConfig:
    path: str
    http_listen: tuple[str, int]
    metrics_listen: tuple[str, int] | None
    store_path: str                      # absolute
    agencies_path: str                   # absolute; file or directory
    routing_rules_path: str              # absolute; directory or file
    ussd_menus_path: str | None          # absolute
    operators: tuple[OperatorConfig, ...]
    agencies: tuple[Agency, ...]
    routing: Routing
    retention: Retention = Retention()
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
