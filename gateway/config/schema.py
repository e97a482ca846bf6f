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
DEFAULT_ADMIN_LISTEN = ("127.0.0.1", 9109)      # the admin endpoint: loopback only by default


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
    ussd: "UssdOperator | None" = None              # its USSD fields; None: the defaults


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
    links: tuple[str, ...] = ()          # hosts its texts may link to (normal form); () any
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
    messages: float = 30.0       # ended messages, with their parts
    audit: float = 365.0         # audit rows (refused senders, ...)
    receipts: float = 3.0        # receipts that matched no part (yet)
    inbound: float = 30.0        # raw inbound PDUs as received
    inbox: float = 30.0          # citizens' replies in the agencies' inboxes
    ussd: float = 90.0           # USSD dialog records (one per dialog, like a CDR)


@dataclass(frozen=True)
class Authenticity:
    """The 4040 check (gateway.yaml `authenticity:`)."""
    retention_days: float = 30.0  # how long sent texts' fingerprints are kept, and looked back
    checks_per_hour: int = 10     # per citizen; over it one polite answer, then silence


LOG_FORMATS = ("auto", "json", "text")     # auto: JSON unless stderr is a terminal


@dataclass(frozen=True)
class LogSettings:
    """gateway.yaml `log:`. Message text is logged (at DEBUG) only for the agencies
    named in debug_text_agencies: a debugging aid an operator turns on per agency."""
    format: str = "auto"                           # one of LOG_FORMATS
    debug_text_agencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class App:
    """A partner app that shows citizens their national inbox (apps.yaml): it may read a
    citizen's messages and send a citizen's replies, never send as an agency."""
    id: str
    name: str
    keys: tuple[str, ...]                # "sha256:<64 lowercase hex>"; none an agency's
    rate_per_s: float = 50.0             # citizen API requests a second (429 beyond)


@dataclass(frozen=True)
class DirectorySettings:
    """gateway.yaml `directory:`: the citizens of a file (embedded default) or a lookup
    service `GET {url}/citizens/{national_id}`."""
    path: str | None = None              # absolute; the file's citizens are in `citizens`
    url: str | None = None               # without a trailing "/"
    timeout_s: float = 2.0               # url: one lookup, then 503 directory_unavailable
    cache_ttl_s: float = 300.0           # url: answers (found or not) kept this long
    cache_size: int = 100_000            # url: entries at most (oldest go first)
    citizens: tuple = ()                 # path: Citizen per entry of the file


@dataclass(frozen=True)
class SmtpSettings:
    """gateway.yaml `smtp:`: the mail server the email fallback sends through."""
    host: str
    sender: str                          # `from`: the envelope sender and From header
    port: int = 25
    username: str | None = None          # SMTP AUTH, with password; none: no AUTH
    password: str | None = None
    starttls: bool = False               # true: STARTTLS is required before sending
    timeout_s: float = 30.0              # one attempt (connect to the last reply)
    max_attempts: int = 5                # then the email is failed
    retry_s: tuple[float, float] = (60.0, 1800.0)   # backoff between attempts, from, to

    def __repr__(self):                  # never the password in a log line
        return f"SmtpSettings(host={self.host!r}, port={self.port})"


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
    http_workers: int | str = "auto"     # HTTP worker processes: "auto" (CPUs - 1; one
                                         # process on one CPU), or N; 0: one process
    authenticity: Authenticity = Authenticity()
    admin_listen: tuple[str, int] | None = DEFAULT_ADMIN_LISTEN   # status and reload
    ussd_menus: tuple = ()               # UssdMenu per agency file under ussd_menus_path
    log: LogSettings = LogSettings()
    apps_path: str | None = None         # absolute; apps.yaml
    apps: tuple[App, ...] = ()
    directory: DirectorySettings | None = None
    smtp: SmtpSettings | None = None     # the email fallback's server; None: refused


# USSD menus (issue 9): one UssdMenu per agency file under `ussd_menus:`, read by
# gateway/config/ussd_file.py and walked by gateway/ussd.  Texts are per language.
USSD_STATE_KINDS = ("menu", "input", "end", "router", "dynamic", "file")
USSD_VALIDATORS = ("national_id", "mobile", "digits", "postal_code")
USSD_LANGUAGES = ("fa", "en")
USSD_ROUTE_TESTS = ("equals", "matches", "in", "set")


@dataclass(frozen=True)
class UssdText:
    """A text in Persian and, optionally, English (Persian where English is missing)."""
    fa: str
    en: str | None = None

    def get(self, language):
        return self.en if language == "en" and self.en is not None else self.fa


@dataclass(frozen=True)
class UssdOption:
    label: UssdText
    next: str
    language: str | None = None          # choosing it switches the session's language


@dataclass(frozen=True)
class UssdRoute:
    var: str                             # a collected value, or "language"
    test: str                            # one of USSD_ROUTE_TESTS
    value: object                        # str, a compiled-pattern source, tuple, or bool
    next: str


@dataclass(frozen=True)
class UssdState:
    name: str
    kind: str                            # one of USSD_STATE_KINDS
    text: UssdText | None = None
    options: tuple[UssdOption, ...] = ()           # menu
    save: str | None = None                        # input, dynamic: the value's name
    pattern: str | None = None                     # input: a regex the whole input matches
    validator: str | None = None                   # input: one of USSD_VALIDATORS
    error: UssdText | None = None                  # input: shown above the text again
    next: str | None = None                        # input, dynamic (not ending)
    routes: tuple[UssdRoute, ...] = ()             # router: first match wins
    default: str | None = None                     # router
    url: str | None = None                         # dynamic: the agency's endpoint
    fallback: UssdText | None = None               # dynamic: when it fails or is slow
    timeout_s: float = 2.0                         # dynamic
    sms: UssdText | None = None                    # file: also sent by SMS
    fields: tuple[str, ...] = ()                   # file: values filed (empty: all)
    line: int = 0                                  # where the state starts in its file


@dataclass(frozen=True)
class UssdMenu:
    agency: str
    code: str                            # the agency's ussd_code, "*4*0135#"
    path: str                            # the file, for messages
    start: str
    states: tuple[UssdState, ...]
    more_key: str = "99"                 # the "more" option of a paginated page
    more: UssdText = UssdText("بیشتر", "More")
    invalid: UssdText = UssdText("گزینه نامعتبر است.", "Invalid choice.")

    def state(self, name):
        for state in self.states:
            if state.name == name:
                return state
        return None


@dataclass(frozen=True)
class UssdOperator:
    """How one operator's USSD gateway writes its fields (gateway.yaml operators[].ussd)."""
    new_ops: tuple[int, ...] = (1,)
    continue_ops: tuple[int, ...] = (18,)
    abort_ops: tuple[int, ...] = (0x81,)
    end_ops: tuple[int, ...] = (17,)
    dial_field: str = "short_message"    # or "destination_addr"
    answer_style: str = "op"             # or "end_bit"
    continue_op: int = 2
    end_op: int = 17
