"""The bodies of POST /v1/broadcasts, parsed as they arrive (never whole in memory).

Three shapes, each handing recipient entries to a sink (`add(entry, where)`) as soon as
they are complete, keeping at most one unfinished line or JSON value:
- `application/json`: `{"from", "text", "priority", "validity_s", "receipt", "to": [...]}`
  in any member order; the other members are handed over as `fields` when the object
  ends (`to` entries are strings, an object with `"to"`, or `{"national_id": "..."}`);
- `application/x-ndjson`: one JSON value per line, a string (or `{"to": "..."}`, or
  `{"national_id": "..."}`);
- `text/csv`: one number per line in the first column, an optional header line; a
  header naming a `national_id` column makes that column's cell the recipient where it
  is not empty (else the line's number: the column named msisdn, number, to, mobile or
  phone, or the first other one).
Malformed input raises BodyError (the API answers 400 invalid_request).
"""

import codecs
import json
import re

from gateway.outbound.recipients import ByNationalId

MAX_PENDING = 64 * 1024          # an unfinished line or JSON value held at most
_NUMBER_COLUMNS = ("msisdn", "number", "to", "mobile", "phone")
_WHITESPACE = " \t\r\n"
_DECODER = json.JSONDecoder()
# Whole blocks of lines that are each one plain entry (the usual upload): a regex pass
# in C, then the sink takes the block at once, instead of a Python step per line
# (1,000,000 recipients: ~5.5 → ~1.5 µs each with the intake's own work, measured).
_PLAIN_NDJSON = re.compile(r'(?:"[^"\\\r\n]*"\r?\n)+')
_PLAIN_NDJSON_ENTRY = re.compile(r'"([^"\\\r\n]*)"\r?\n')
_PLAIN_CSV = re.compile(r"(?:\+?[0-9]+\r?\n)+")
_PLAIN_CSV_ENTRY = re.compile(r"(\+?[0-9]+)\r?\n")


class BodyError(ValueError):
    """The body is not what its Content-Type says."""


class _Text:
    """UTF-8 bytes in, text out, a character split between chunks kept for the next."""

    def __init__(self):
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def decode(self, chunk, final=False):
        try:
            return self._decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise BodyError("the body is not UTF-8") from None


class LineBody:
    """NDJSON or CSV: one recipient per line."""

    def __init__(self, sink, kind):
        self.sink = sink
        self.kind = kind                 # "ndjson" | "csv"
        self._text = _Text()
        self._pending = ""
        self._line = 0
        self._first = True
        self._id_column = None           # CSV: the header's national_id column
        self._number_column = None       # CSV with a national_id column: the number's

    def feed(self, chunk):
        text = self._pending + self._text.decode(chunk)
        end = text.rfind("\n") + 1
        block, self._pending = text[:end], text[end:]
        if len(self._pending) > MAX_PENDING:
            raise BodyError(f"line {self._line + 1} is too long")
        if not block:
            return
        plain, entry = ((_PLAIN_NDJSON, _PLAIN_NDJSON_ENTRY) if self.kind == "ndjson"
                        else (_PLAIN_CSV, _PLAIN_CSV_ENTRY))
        if plain.fullmatch(block):
            entries = entry.findall(block)
            first = self._line + 1
            self._line += len(entries)
            self._first = False          # a line of digits is no header
            self._add_all(entries, lambda index: f"line {first + index}")
            return
        lines = block.split("\n")
        lines.pop()
        for line in lines:
            self._one(line)

    def _add_all(self, entries, where_of):
        """Hand a block's entries to the sink, at once if it can take them so."""
        add_all = getattr(self.sink, "add_all", None)
        if add_all is not None:
            add_all(entries, where_of)
            return
        for index, entry in enumerate(entries):
            self.sink.add(entry, where_of(index))

    def end(self):
        rest = self._pending + self._text.decode(b"", final=True)
        self._pending = ""
        if rest.strip():
            self._one(rest)
        return {}

    def _one(self, line):
        self._line += 1
        line = line.strip()
        if not line:
            return
        where = f"line {self._line}"
        if self.kind == "csv":
            cell = line.split(",", 1)[0].strip().strip('"').strip()
            first, self._first = self._first, False
            if first and not any(ch.isdigit() for ch in cell):
                self._header(line)       # a header ("to", "msisdn", "national_id", ...)
                return
            if self._id_column is not None:
                self.sink.add(self._csv_entry(line), where)
                return
            self.sink.add(cell, where)
            return
        if line[0] == '"' and line[-1] == '"' and "\\" not in line and len(line) > 1 \
                and '"' not in line[1:-1]:
            self.sink.add(line[1:-1], where)      # a plain string: no JSON parse needed
            return
        try:
            value = json.loads(line)
        except ValueError:
            raise BodyError(f"{where} is not JSON") from None
        self.sink.add(_entry(value), where)


    def _header(self, line):
        names = [_cell(name).lower() for name in line.split(",")]
        if "national_id" in names:
            self._id_column = names.index("national_id")
            others = [i for i in range(len(names)) if i != self._id_column]
            named = [i for i in others if names[i] in _NUMBER_COLUMNS]
            self._number_column = (named or others or [None])[0]

    def _csv_entry(self, line):
        cells = line.split(",")
        national_id = _cell(cells[self._id_column]) if len(cells) > self._id_column else ""
        if national_id:
            return ByNationalId(national_id)
        column = self._number_column
        return _cell(cells[column]) if column is not None and len(cells) > column else ""


def _cell(text):
    return text.strip().strip('"').strip()


def _entry(value):
    """A recipient entry as given: a string, the "to" of an object, or a national ID."""
    if isinstance(value, dict):
        if set(value) == {"to"}:
            return value["to"]
        if set(value) == {"national_id"}:
            return ByNationalId(value["national_id"])
    return value


class JsonBody:
    """A JSON object read member by member; the `to` array element by element."""

    # States: what comes next.
    OPEN, KEY, COLON, VALUE, AFTER_VALUE, TO_OPEN, ELEMENT, AFTER_ELEMENT, DONE = range(9)

    def __init__(self, sink, members=None):
        """members: the member names taken besides "to" (None: any); another is
        refused as soon as its name is read, not held until the object ends (a
        streamed body has no size limit)."""
        self.sink = sink
        self.members = members
        self.fields = {}
        self._text = _Text()
        self._buffer = ""
        self._state = self.OPEN
        self._key = None
        self._index = 0
        self._seen_to = False
        self._first_element = False

    def feed(self, chunk):
        self._buffer += self._text.decode(chunk)
        self._run(final=False)
        if len(self._buffer) > MAX_PENDING:
            raise BodyError("a JSON value of the body is too long")

    def end(self):
        self._buffer += self._text.decode(b"", final=True)
        self._run(final=True)
        if self._state != self.DONE:
            raise BodyError("the JSON body ends unfinished")
        return self.fields

    def _run(self, final):
        buffer = self._buffer
        at = 0
        size = len(buffer)
        while True:
            while at < size and buffer[at] in _WHITESPACE:
                at += 1
            if at >= size:
                break
            state = self._state
            char = buffer[at]
            if state == self.OPEN:
                if char != "{":
                    raise BodyError("the body must be a JSON object")
                at += 1
                self._state = self.KEY
            elif state == self.KEY:
                if char == "}" and not self.fields and not self._seen_to:
                    at += 1
                    self._state = self.DONE
                    continue
                value, end = self._value(buffer, at, final)
                if end is None:
                    break
                if not isinstance(value, str):
                    raise BodyError("object member names must be strings")
                if value in self.fields or (value == "to" and self._seen_to):
                    raise BodyError(f"member {value!r} appears twice")
                if (self.members is not None and value != "to"
                        and value not in self.members):
                    raise BodyError(f"unknown fields: {value[:40]}")
                self._key, at, self._state = value, end, self.COLON
            elif state == self.COLON:
                if char != ":":
                    raise BodyError("':' expected after a member name")
                at += 1
                self._state = self.TO_OPEN if self._key == "to" else self.VALUE
            elif state == self.VALUE:
                value, end = self._value(buffer, at, final)
                if end is None:
                    break
                self.fields[self._key] = value
                at, self._state = end, self.AFTER_VALUE
            elif state == self.AFTER_VALUE:
                at += 1
                if char == ",":
                    self._state = self.KEY
                elif char == "}":
                    self._state = self.DONE
                else:
                    raise BodyError("',' or '}' expected after a member")
            elif state == self.TO_OPEN:
                if char != "[":
                    raise BodyError("'to' must be an array")
                self._seen_to = True
                at += 1
                self._state = self.ELEMENT
                self._first_element = True
            elif state == self.ELEMENT:
                if char == "]" and self._first_element:
                    at += 1
                    self._state = self.AFTER_VALUE
                    continue
                value, end = self._value(buffer, at, final)
                if end is None:
                    break
                self.sink.add(_entry(value), f"to[{self._index}]")
                self._index += 1
                self._first_element = False
                at, self._state = end, self.AFTER_ELEMENT
            elif state == self.AFTER_ELEMENT:
                at += 1
                if char == ",":
                    self._state = self.ELEMENT
                elif char == "]":
                    self._state = self.AFTER_VALUE
                else:
                    raise BodyError("',' or ']' expected in 'to'")
            else:                                    # DONE: only whitespace may follow
                raise BodyError("data after the JSON object")
        self._buffer = buffer[at:]

    @staticmethod
    def _value(buffer, at, final):
        """(value, end) of the JSON value at `at`, or (None, None) if it may still be
        incomplete.  A value reaching the end of what arrived so far waits for more
        (a number could go on)."""
        try:
            value, end = _DECODER.raw_decode(buffer, at)
        except ValueError:
            if final:
                raise BodyError("malformed JSON in the body") from None
            return None, None
        if end >= len(buffer) and not final:
            return None, None
        return value, end
