"""What to do with a command_status an SMSC answered.

`classify_status(code)` gives one of:
  "ok"         accepted.
  "throttled"  the operator wants us slower (ESME_RTHROTTLED, ESME_RMSGQFUL): pause the
               operator and requeue without counting an attempt.
  "temporary"  worth retrying with backoff, a bounded number of times.
  "rebind"     the session is in a bad state (not bound / already bound): rebind.
  "permanent"  this message can never go as it is: mark it failed.
  "bind_error" the bind itself is refused (credentials, system_type): back off long.

Codes SMPP 3.4 does not define, including the SMSC vendor range 0x400-0x4FF, are
"temporary": nothing tells us the message is undeliverable, and the caller's retries
are bounded, so a wrong guess costs a few attempts rather than a lost notice.

`ALERT_STATUSES` are the codes that also mean *our* configuration or code is wrong
(bad source address/TON/NPI, malformed PDU fields, refused credentials): the message
fails either way, but an operator's engineer must be told.
"""

from gateway.smpp import constants as c

OK = "ok"
THROTTLED = "throttled"
TEMPORARY = "temporary"
REBIND = "rebind"
PERMANENT = "permanent"
BIND_ERROR = "bind_error"

_THROTTLED = {c.ESME_RTHROTTLED, c.ESME_RMSGQFUL}

_TEMPORARY = {
    c.ESME_RSYSERR, c.ESME_RSUBMITFAIL, c.ESME_RX_T_APPN,
    c.ESME_RDELIVERYFAILURE, c.ESME_RUNKNOWNERR,
    # Failures of operations we only name (cancel/replace/query): nothing permanent known.
    c.ESME_RCANCELFAIL, c.ESME_RREPLACEFAIL, c.ESME_RQUERYFAIL,
}

_REBIND = {c.ESME_RINVBNDSTS, c.ESME_RALYBND}

_BIND_ERROR = {c.ESME_RBINDFAIL, c.ESME_RINVPASWD, c.ESME_RINVSYSID, c.ESME_RINVSYSTYP}

# Permanent because of the citizen's number or the recipient's handset / application.
_PERMANENT_NOT_OURS = {
    c.ESME_RINVDSTADR, c.ESME_RINVDSTTON, c.ESME_RINVDSTNPI,
    c.ESME_RX_P_APPN, c.ESME_RX_R_APPN, c.ESME_RINVMSGID,
}

# Permanent because what we sent is wrong: our configuration or our codec.
_PERMANENT_OURS = {
    c.ESME_RINVSRCADR, c.ESME_RINVSRCTON, c.ESME_RINVSRCNPI,
    c.ESME_RINVMSGLEN, c.ESME_RINVCMDLEN, c.ESME_RINVCMDID,
    c.ESME_RINVPRTFLG, c.ESME_RINVREGDLVFLG, c.ESME_RINVSERTYP,
    c.ESME_RINVESMCLASS, c.ESME_RINVSCHED, c.ESME_RINVEXPIRY,
    c.ESME_RINVDFTMSGID, c.ESME_RINVREPFLAG, c.ESME_RINVSUBREP,
    c.ESME_RINVNUMDESTS, c.ESME_RINVDLNAME, c.ESME_RINVDESTFLAG,
    c.ESME_RCNTSUBDL, c.ESME_RINVNUMMSGS,
    c.ESME_RINVOPTPARSTREAM, c.ESME_ROPTPARNOTALLWD, c.ESME_RINVPARLEN,
    c.ESME_RMISSINGOPTPARAM, c.ESME_RINVOPTPARAMVAL,
}

ALERT_STATUSES = frozenset(_PERMANENT_OURS | _BIND_ERROR)

_CLASSES = {c.ESME_ROK: OK}
_CLASSES.update(dict.fromkeys(_THROTTLED, THROTTLED))
_CLASSES.update(dict.fromkeys(_TEMPORARY, TEMPORARY))
_CLASSES.update(dict.fromkeys(_REBIND, REBIND))
_CLASSES.update(dict.fromkeys(_BIND_ERROR, BIND_ERROR))
_CLASSES.update(dict.fromkeys(_PERMANENT_NOT_OURS | _PERMANENT_OURS, PERMANENT))


def classify_status(code):
    """"ok" | "throttled" | "temporary" | "rebind" | "permanent" | "bind_error"."""
    if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code <= 0xFFFFFFFF:
        raise ValueError(f"command_status must be an int 0..0xFFFFFFFF, not {code!r}")
    return _CLASSES.get(code, TEMPORARY)


OTHER_LABEL = "other"


def status_label(code):
    """The metric label of a command_status: its name for a code SMPP 3.4 defines, one
    "other" for every other value (vendor range included), so an SMSC inventing codes
    cannot grow /metrics without bound (issue 6, item 9).  Once per submit_sm_resp:
    the labels are made once."""
    return _LABELS.get(code, OTHER_LABEL)


_LABELS = {code: c.status_name(code) for code in c.STATUS_NAMES}


def needs_alert(code):
    """True when the SMSC's answer means our configuration or our PDUs are wrong."""
    return code in ALERT_STATUSES
