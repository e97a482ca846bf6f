"""The records the store shares with its callers: what is accepted, claimed and recorded.

A leaf: it imports nothing from gateway, so the accept path, the dispatcher, the
inbound side and every store implementation (gateway/store/interface.py) can use it
without depending on each other.  Values only; what the store does with them is in
the interface.
"""

from dataclasses import dataclass

# Priorities: the number stored and claimed by (highest first), the name the API shows.
NORMAL, HIGH, EMERGENCY = 0, 1, 2
PRIORITY_NAMES = {NORMAL: "normal", HIGH: "high", EMERGENCY: "emergency"}
CLAIM_ORDER = tuple(sorted(PRIORITY_NAMES, reverse=True))
# Priority lanes: emergency is strict (ahead of everything); high and normal share what
# is left by these weights, so normal always gets its quarter while both wait.
LANE_SHARES = {HIGH: 3, NORMAL: 1}

# A message goes queued → submitted → delivered | failed | expired; each of its parts
# queued → sending → submitted → delivered | failed | expired.
MESSAGE_STATES = ("queued", "submitted", "delivered", "failed", "expired")
PART_STATES = ("queued", "sending", "submitted", "delivered", "failed", "expired")
# States that never change again.
FINAL_STATES = ("delivered", "failed", "expired")

# What a submit attempt did to a part (PartOutcome.kind).
OUTCOME_KINDS = ("submitted", "requeue", "failed", "expired")
# The error of a part whose sends went unanswered (it may have reached the citizen).
UNKNOWN_OUTCOME = "unknown_outcome"
# The error of a message to a national ID the directory does not know: stored failed,
# with no number and no parts (it costs no quota).
UNKNOWN_CITIZEN = "unknown_citizen"


@dataclass
class NewMessage:
    """One message to one recipient, built by the accept path."""
    id: str
    agency: str
    sender: str
    recipient: str
    text: str
    priority: int
    reference: str | None
    validity_s: int
    receipt: bool
    data_coding: int
    esm_class: int
    parts: list[bytes]
    created_at: float
    route: str | None = None           # the operator the recipient's routing rule prefers
    fingerprint: bytes | None = None   # its text's (gateway.text.fingerprint), kept for
                                       # the 4040 check; None: not an agency's notice
    error: str | None = None           # recorded failed at accept with this error, never
                                       # sent ("opted_out": the citizen sent STOP)
    citizen: "Citizen | None" = None   # the directory's entry, when addressed by national
                                       # ID (resolved at accept; its email serves fallback)
    fallback: str | None = None        # "email": sent by email if the SMS fails or
                                       # expires (store migration 17)
    fallback_address: str | None = None    # the address found at accept (None: unknown)
    national_id: str | None = None     # the ID the agency addressed (stored: its answers
                                       # show it and only a masked number)


@dataclass(frozen=True)
class SentMatch:
    """What the 4040 check found: a message with that text was sent by `agency` at
    `sent_at`, to the citizen who asks (`to_citizen`) or to someone else."""
    agency: str
    sent_at: float
    to_citizen: bool


@dataclass
class NewBroadcast:
    """One text to many recipients: stored once with its parts (the recipients are
    stored beforehand in batches: store.add_broadcast_recipients)."""
    id: str
    agency: str
    sender: str
    text: str
    priority: int
    validity_s: int
    receipt: bool
    data_coding: int
    esm_class: int
    parts: list[bytes]                 # short_message of each part, UDH included
    created_at: float
    recipients: int                    # distinct valid numbers stored
    invalid: int                       # entries that were not numbers
    fingerprint: bytes | None = None   # its text's, for the 4040 check (one row per recipient)
    unknown_citizens: int = 0          # national IDs the directory did not know (failed)


@dataclass
class ClaimedPart:
    """A part the dispatcher took from the store to send."""
    message_id: str
    seq: int
    total: int
    agency: str
    sender: str
    recipient: str
    priority: int
    data_coding: int
    esm_class: int
    payload: bytes
    receipt: bool
    attempts: int
    expires_at: float
    unknowns: int = 0                  # sends whose outcome never came (migration 5)


@dataclass
class PartOutcome:
    """What became of a claimed part, for the store to record."""
    message_id: str
    seq: int
    kind: str                          # "submitted" | "requeue" | "failed" | "expired"
    operator: str | None = None
    smsc_id: str | None = None
    error: str | None = None
    not_before: float | None = None
    count_attempt: bool = True
    unknown: bool = False              # with "requeue": the send's outcome is unknown


# Where an inbox message came from (the API's `channel`).
CHANNELS = ("sms", "ussd", "app")


@dataclass
class InboxEntry:
    """A citizen's message for an agency's inbox (agency None: the unrouted box)."""
    agency: str | None
    number: str                        # the agency's number it was sent to ("40401234")
    citizen: str                       # the citizen's MSISDN, international ("98912...")
    text: str
    channel: str                       # one of CHANNELS
    received_at: float
    operator: str | None = None        # the operator it came from (sms, ussd)
    partial: bool = False              # a concatenated MO released with parts missing
    source_key: str | None = None      # filed once per key (a redelivered MO)
    in_reply_to: str | None = None     # the message it answers, when the channel knows it
                                       # (a partner app); else the store finds the latest


@dataclass(frozen=True)
class CitizenMessage:
    """A message an agency sent to a citizen, as the national inbox shows it (a single
    message, or a broadcast's to that citizen with the broadcast's text)."""
    id: str
    agency: str
    sender: str
    text: str
    created_at: float
    status: str


@dataclass
class InboxMessage:
    """A filed inbox message as the API shows it (`seq`: its place, the paging cursor)."""
    seq: int
    id: str
    agency: str | None
    number: str
    citizen: str
    text: str
    channel: str
    received_at: float
    in_reply_to: str | None
    operator: str | None
    partial: bool


# Why a USSD dialog ended (its record's end_reason).
USSD_END_REASONS = ("completed", "user_abort", "timeout", "network", "restarted")


@dataclass
class UssdDialogRecord:
    """One USSD dialog, kept like a CDR (store migration 12)."""
    id: str
    agency: str
    operator: str | None
    msisdn: str
    code: str
    started_at: float
    ended_at: float
    steps: int
    end_reason: str                    # one of USSD_END_REASONS
    last_state: str | None
    tracking: str | None = None        # the filing's tracking number, if one was filed
@dataclass
class MoPart:
    """One part of a citizen's SMS as the intake keeps it until its set is whole.

    `set_key` names the set among a citizen's messages (operator, citizen, number, the
    kind and value of the concatenation reference, the part count): parts of one set
    may come on different binds of that operator.  A single-part message is a set of
    one, keyed by its content, so that a redelivery of it is recognised."""
    set_key: str
    seq: int                           # 1..total
    total: int                         # 1..255
    operator: str
    citizen: str                       # "98912..." (or the source address as sent)
    destination: str                   # the number it was sent to ("40401234", "4040")
    data_coding: int
    body: bytes                        # the payload after any UDH, not yet decoded
    received_at: float


@dataclass
class MoSet:
    """A set of kept parts (`set_id`: the set_key and when its first part came)."""
    set_id: str
    parts: list                        # [MoPart] present, in seq order
    complete: bool


@dataclass(frozen=True)
class Citizen:
    """What the directory (Shahkar-style) knows of one citizen: the mobile number the
    national ID is registered to, and an email address if the citizen gave one."""
    national_id: str                   # ten ASCII digits, check digit valid
    msisdn: str                        # "98912..."
    email: str | None = None

    def __repr__(self):                # never a national ID or number in a log line
        return "Citizen(<personal data>)"
