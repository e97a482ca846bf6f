"""Finding the hosts a text links to, as a handset or a hurried reader would see them.

Used by the accept path (an agency with `links` may link only to those hosts) and by
the config reader (the listed hosts, in the same normal form). What counts as a link:

- anything after a scheme (`http://`, `https://`, `hxxp://`, any `word://`): its host,
  userinfo (`tax.gov.ir@evil.com`) and port cut off;
- a bare domain: labels of letters, digits and `-` joined by dots, whose last label (the
  top-level domain) has 2+ letters and is not all Arabic script (Persian prose written
  without a space after a full stop is not a domain), or is the Persian IDN TLD ایران;
- `www.` followed by anything host-like.

Before looking, the text is read as a handset renders it: NFKC (full-width letters and
dots become ASCII), the dots IDNA treats as dots (U+3002, U+FF0E, U+FF61) and the Arabic
full stop U+06D4 become `.`, defanged dots (`[.]`, `(.)`) too, Persian and Arabic-Indic
digits become ASCII, and invisible characters (ZWNJ, ZWJ, zero-width space, word joiner,
BOM, soft hyphen) are dropped, so `tax\u200c.gov.ir` is `tax.gov.ir`. Hosts compare in
one normal form (`normal_host`): lower case, no trailing dot, IDNA (punycode) for
non-ASCII labels; a Cyrillic `і` in `tax.gov.іr` therefore makes a different host. A
host is allowed only if it is listed exactly: subdomains are hosts of their own.
"""

import re
import unicodedata

_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": ".", "\u06d4": ".",
                       "\u2024": ".", "\ufe52": "."})
_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f"))
_DEFANGED = re.compile(r"[\[\(\{]\.[\]\)\}]")

_LABEL = r"[^\W_](?:[\w-]{0,62}[^\W_])?"
# A scheme and what follows up to the end of the authority.
_AFTER_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://([^\s/?#\\]*)")
_BARE = re.compile(rf"(?<![\w.-])((?:{_LABEL}\.)+{_LABEL})\.?(?![\w-])")
_WWW = re.compile(rf"(?<![\w.])www\.({_LABEL}(?:\.{_LABEL})*)", re.IGNORECASE)
_ARABIC_SCRIPT = re.compile(r"^[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff"
                            r"\ufe70-\ufeff]+$")
_PERSIAN_TLDS = {"ایران", "ايران"}
MAX_HOST = 253


def readable(text):
    """The text as a reader sees it, for finding hosts (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).translate(_DOTS)
    text = _DEFANGED.sub(".", text)
    return text.translate(_DIGITS).translate(_INVISIBLE)


def normal_host(name):
    """The normal form of a host name (lower case, no trailing dot, IDNA for non-ASCII
    labels), or None when it is not one."""
    name = readable(name).strip().rstrip(".").lower()
    if not name or len(name) > MAX_HOST or any(c in name for c in " /:@?#\\"):
        return None
    labels = []
    for label in name.split("."):
        if not label:
            return None
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label):
            return None
        labels.append(label)
    return ".".join(labels)


def _tld_like(label):
    return (len(label) >= 2 and all(not c.isdigit() for c in label)
            and (not _ARABIC_SCRIPT.match(label) or label in _PERSIAN_TLDS))


def hosts_in(text):
    """Every host the text links to, in normal form (a host that has none, say
    `xn--` garbage, is kept lower-cased as written), first seen first."""
    seen = []
    text = readable(text)

    def add(raw):
        raw = raw.strip(".")
        if not raw:
            return
        host = normal_host(raw)
        host = host if host is not None else raw.lower()
        if host not in seen:
            seen.append(host)

    for match in _AFTER_SCHEME.finditer(text):
        authority = match.group(1).rpartition("@")[2]
        if authority.startswith("["):
            add(authority.partition("]")[0] + "]")
        else:
            add(authority.partition(":")[0])
    for match in _WWW.finditer(text):
        add("www." + match.group(1))
    for match in _BARE.finditer(text):
        candidate = match.group(1)
        if _tld_like(candidate.rsplit(".", 1)[1]):
            add(candidate)
    return seen


def outside(text, allowed):
    """The first host `text` links to that is not in `allowed` (normal forms), or None."""
    for host in hosts_in(text):
        if host not in allowed:
            return host
    return None
