"""GSM 03.38 (3GPP TS 23.038) default alphabet, as SMPP carries it: one septet per octet.

Every function here runs once per HTTP request, so the work is done by C-level string
machinery (frozenset.issuperset, str.translate, str.count) over tables built at import.
"""

ESCAPE = 0x1B

# The default alphabet, index = septet value. Position 0x1B is the escape to the
# extension table and is not a character of its own (None).
BASIC_TABLE = (
    "@", "£", "$", "¥", "è", "é", "ù", "ì", "ò", "Ç", "\n", "Ø", "ø", "\r", "Å", "å",
    "Δ", "_", "Φ", "Γ", "Λ", "Ω", "Π", "Ψ", "Σ", "Θ", "Ξ", None, "Æ", "æ", "ß", "É",
    " ", "!", '"', "#", "¤", "%", "&", "'", "(", ")", "*", "+", ",", "-", ".", "/",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", ":", ";", "<", "=", ">", "?",
    "¡", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O",
    "P", "Q", "R", "S", "T", "U", "V", "W", "X", "Y", "Z", "Ä", "Ö", "Ñ", "Ü", "§",
    "¿", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o",
    "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "ä", "ö", "ñ", "ü", "à",
)

# The extension table: reached by ESCAPE followed by the code; costs two septets.
EXTENSION_TABLE = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

BASIC_CHARS = frozenset(c for c in BASIC_TABLE if c is not None)
EXTENSION_CHARS = frozenset(EXTENSION_TABLE.values())
GSM_CHARS = BASIC_CHARS | EXTENSION_CHARS

# str.translate tables. Encoding maps each character to a latin-1 "byte string" so a
# single .encode("latin-1") afterwards yields the septets.
_ENCODE = {ord(c): chr(code) for code, c in enumerate(BASIC_TABLE) if c is not None}
_ENCODE.update({ord(c): chr(ESCAPE) + chr(code) for code, c in EXTENSION_TABLE.items()})

# Decoding without escapes: octet value (as a latin-1 code point) -> character.
# Octets above 0x7F are not septets at all; the lone escape has no glyph.
_DECODE = {code: (c if c is not None else "?") for code, c in enumerate(BASIC_TABLE)}
_DECODE.update({code: "?" for code in range(0x80, 0x100)})
_DECODE_TABLE = str.maketrans(_DECODE)


# ASCII fast path (most Latin-script messages): bytes.translate over a 256-octet table.
# Extension characters first become placeholder octets above 0x7F (never produced by
# the basic table), which are then replaced by their escape pairs.
_ASCII_NOT_GSM = bytes(code for code in range(128) if chr(code) not in GSM_CHARS)
_ASCII_EXTENSION = {ord(c): code for code, c in EXTENSION_TABLE.items() if c.isascii()}
_ASCII_EXTENSION_OCTETS = bytes(_ASCII_EXTENSION)
_PLACEHOLDERS = {}      # placeholder octet -> escape pair
_ascii_table = bytearray(range(256))
for _code, _char in enumerate(BASIC_TABLE):
    if _char is not None and _char.isascii():
        _ascii_table[ord(_char)] = _code
for _index, (_source, _code) in enumerate(_ASCII_EXTENSION.items()):
    _ascii_table[_source] = 0x80 + _index
    _PLACEHOLDERS[bytes([0x80 + _index])] = bytes([ESCAPE, _code])
_ASCII_TABLE = bytes(_ascii_table)
del _ascii_table, _code, _char, _index, _source


def is_gsm(text: str) -> bool:
    """True when every character of text is in the default alphabet or its extension."""
    if text.isascii():
        raw = text.encode("ascii")
        return len(raw.translate(None, _ASCII_NOT_GSM)) == len(raw)
    return GSM_CHARS.issuperset(text)


def first_non_gsm(text: str) -> int:
    """Index of the first character outside GSM 03.38, or -1 (used for error messages)."""
    for index, char in enumerate(text):
        if char not in GSM_CHARS:
            return index
    return -1


def gsm_length(text: str) -> int:
    """Length in septets: extension characters count two. text must be GSM (see is_gsm)."""
    if text.isascii():
        raw = text.encode("ascii")
        return 2 * len(raw) - len(raw.translate(None, _ASCII_EXTENSION_OCTETS))
    extra = 0
    for char in EXTENSION_CHARS:
        extra += text.count(char)
    return len(text) + extra


def try_gsm_encode(text: str):
    """Unpacked septets, or None when text has a character outside GSM 03.38 (one pass
    for the usual question "GSM or UCS2?")."""
    if text.isascii():
        raw = text.encode("ascii")
        if len(raw.translate(None, _ASCII_NOT_GSM)) != len(raw):
            return None
        septets = raw.translate(_ASCII_TABLE)
        if len(raw.translate(None, _ASCII_EXTENSION_OCTETS)) != len(raw):
            for placeholder, pair in _PLACEHOLDERS.items():
                septets = septets.replace(placeholder, pair)
        return septets
    if not GSM_CHARS.issuperset(text):
        return None
    return text.translate(_ENCODE).encode("latin-1")


def gsm_encode(text: str) -> bytes:
    """Unpacked septets (one per octet); extension characters as 0x1B + code."""
    if not isinstance(text, str):
        raise TypeError(f"gsm_encode needs str, not {type(text).__name__}")
    septets = try_gsm_encode(text)
    if septets is None:
        index = first_non_gsm(text)
        raise ValueError(
            f"character U+{ord(text[index]):04X} at position {index} is not in GSM 03.38")
    return septets


def gsm_decode(data: bytes) -> str:
    """Unpacked septets to text. Tolerant: octets above 0x7F and a trailing or doubled
    escape become '?'; an escape before a code missing from the extension table shows
    the default-alphabet character, as TS 23.038 asks of a receiver."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"gsm_decode needs bytes, not {type(data).__name__}")
    data = bytes(data)
    if ESCAPE not in data:
        return data.decode("latin-1").translate(_DECODE_TABLE)
    chunks = data.split(b"\x1b")
    pieces = [chunks[0].decode("latin-1").translate(_DECODE_TABLE)]
    # Each later chunk began right after an escape: its first octet is the extension code.
    skip_next = False
    for chunk in chunks[1:]:
        if skip_next:
            # This chunk was opened by an escape that was itself the code of an
            # ESC ESC pair (reserved for another table): that pair is already a '?'.
            skip_next = False
            pieces.append(chunk.decode("latin-1").translate(_DECODE_TABLE))
            continue
        if not chunk:
            # Escape at the very end, or ESC ESC: no usable extension code.
            pieces.append("?")
            skip_next = True
            continue
        code = chunk[0]
        pieces.append(EXTENSION_TABLE.get(code) or _DECODE[code])
        pieces.append(chunk[1:].decode("latin-1").translate(_DECODE_TABLE))
    return "".join(pieces)
