"""gateway.yaml `smtp:`: the mail server the email fallback sends through.

`smtp: {host, port, from, username, password, starttls, timeout_s, max_attempts,
retry_s}`; `host` and `from` are required. Without this section an agency's
`"fallback": "email"` is refused (400), so nothing is accepted that could not be sent.
"""

from gateway.config.schema import SmtpSettings

SMTP_KEYS = ("host", "port", "from", "username", "password", "starttls", "timeout_s",
             "max_attempts", "retry_s")
MAX_ADDRESS = 254


def read_smtp_settings(reader, node):
    """SmtpSettings from gateway.yaml's `smtp:`, or None after recording why not."""
    fields = reader.mapping(node, "smtp", SMTP_KEYS, required=("host", "from"))
    if fields is None or "host" not in fields or "from" not in fields:
        return None
    before = len(reader.errors)
    values = {"host": reader.text(fields["host"][1], "smtp.host")}
    sender = reader.text(fields["from"][1], "smtp.from")
    if sender is not None and not looks_like_address(sender):
        reader.fail(fields["from"][1], "smtp.from: expected an address name@domain "
                                       "(the envelope sender and From of every email)")
    values["sender"] = sender
    if "port" in fields:
        values["port"] = reader.integer(fields["port"][1], "smtp.port", 1, 65535)
    for key in ("username", "password"):
        if key in fields:
            values[key] = reader.text(fields[key][1], f"smtp.{key}")
    if ("username" in fields) != ("password" in fields):
        reader.fail(node, "smtp: give both 'username' and 'password' (SMTP AUTH), "
                          "or neither")
    if "starttls" in fields:
        values["starttls"] = reader.boolean(fields["starttls"][1], "smtp.starttls")
    if "timeout_s" in fields:
        values["timeout_s"] = reader.number(fields["timeout_s"][1], "smtp.timeout_s",
                                            above=0, maximum=600)
    if "max_attempts" in fields:
        values["max_attempts"] = reader.integer(fields["max_attempts"][1],
                                                "smtp.max_attempts", 1, 100)
    if "retry_s" in fields:
        values["retry_s"] = _read_retry(reader, fields["retry_s"][1])
    if len(reader.errors) > before or any(value is None for value in values.values()):
        return None
    return SmtpSettings(**values)


def _read_retry(reader, node):
    items = reader.sequence(node, "smtp.retry_s")
    if items is None:
        return None
    if len(items) != 2:
        reader.fail(node, f"smtp.retry_s: expected two numbers [from, to], "
                          f"got {len(items)} items")
        return None
    low = reader.number(items[0], "smtp.retry_s[0]", above=0, maximum=86400)
    high = reader.number(items[1], "smtp.retry_s[1]", above=0, maximum=86400)
    if low is None or high is None:
        return None
    if low > high:
        reader.fail(node, f"smtp.retry_s: from ({low:g}) must not exceed to ({high:g})")
        return None
    return low, high


def looks_like_address(text):
    local, at, domain = text.rpartition("@")
    return (bool(at) and bool(local) and "." in domain and len(text) <= MAX_ADDRESS
            and text.isascii()
            and not any(ch.isspace() or ch in "<>,;\"\r\n" for ch in text))
