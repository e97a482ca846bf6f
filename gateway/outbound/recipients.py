"""Recipients addressed by national ID: read, checked, resolved through the directory.

A channel hands a `{"national_id": "..."}` entry over as a `ByNationalId`; the accept
path checks every entry before anything else is asked (numbers normalised, national
IDs' check digits), then asks the citizen directory once per distinct ID, a bounded
number at a time (`Resolver`), and sends to the number the directory gave. An ID the
directory does not know becomes a message to nobody, failed `unknown_citizen`. The
agency asked for a citizen, not for a number: its answers show the ID it gave and the
number masked (`show_addressed`). No national ID is ever logged.
"""

import collections
import logging
from dataclasses import dataclass

from twisted.internet import defer
from twisted.python.failure import Failure

from gateway.citizens.directory import DirectoryUnavailable
from gateway.model import UNKNOWN_CITIZEN
from gateway.national_id import InvalidNationalId, normalize_national_id
from gateway.numbers import InvalidNumber, mask_msisdn, normalize_msisdn
from gateway.outbound.errors import (
    DirectoryDown, InvalidNationalIds, InvalidRecipients, NoDirectory)

log = logging.getLogger("payam.outbound.recipients")

MAX_REPORTED = 5              # offending entries named in one refusal
LOOKUPS_AT_ONCE = 16          # directory lookups in flight, all submissions together
NO_NUMBER = ""                # the recipient stored for an unknown citizen


@dataclass(frozen=True)
class ByNationalId:
    """A recipient entry `{"national_id": value}` as its channel read it (unchecked)."""
    value: object

    def __repr__(self):                # never a national ID in a log line
        return "ByNationalId(<national ID>)"


def read_recipients(entries):
    """Every entry checked, before anything is asked of anyone.

    → (numbers, national_ids): `numbers` has the stored form ("98912...") of each
    number entry and None where an entry is a national ID; `national_ids` maps those
    entries' indexes to the ten digits. A bad entry refuses the whole submission: the
    first bad entry decides InvalidNationalIds or InvalidRecipients, the message names
    up to MAX_REPORTED bad entries by index and reason (never their values)."""
    numbers = []
    national_ids = {}
    problems = []
    bad = 0
    first_bad = None
    for index, entry in enumerate(entries):
        if type(entry) is ByNationalId:
            try:
                national_ids[index] = normalize_national_id(entry.value)
            except InvalidNationalId as error:
                bad += 1
                first_bad = first_bad or InvalidNationalIds
                if len(problems) < MAX_REPORTED:
                    problems.append(f"to[{index}]: {error}")
            numbers.append(None)
            continue
        try:
            numbers.append(normalize_msisdn(entry))
        except InvalidNumber as error:
            bad += 1
            first_bad = first_bad or InvalidRecipients
            if len(problems) < MAX_REPORTED:
                problems.append(f"to[{index}]: {error.reason}")
            numbers.append(None)
    if bad:
        more = f" (and {bad - len(problems)} more)" if bad > len(problems) else ""
        raise first_bad(f"{bad} recipient(s) cannot be used: " + "; ".join(problems)
                        + more)
    return numbers, national_ids


class Resolver:
    """National IDs → Citizens through a directory (gateway.citizens.directory's seam),
    at most `at_once` lookups in flight whatever asks (a lookup service may be slow).

    Submissions' IDs wait in one queue, oldest submission first; a lookup answered at
    once (the directory file) is followed by the next without a Deferred of ours, so a
    broadcast of 100,000 IDs costs a few µs per ID."""

    def __init__(self, directory, at_once=LOOKUPS_AT_ONCE):
        self.directory = directory
        self.at_once = at_once
        self.in_flight = 0
        self._jobs = collections.deque()      # _Job, oldest first

    def lookup_all(self, national_ids):
        """Deferred[{national ID: Citizen | None}] for distinct IDs; fails DirectoryDown
        if any lookup could not be answered (nothing is guessed)."""
        job = _Job(list(national_ids))
        if not job.waiting:
            job.done.callback({})
            return job.done
        self._jobs.append(job)
        self._work()
        return job.done

    def _work(self):
        """Ask for queued IDs while slots are free; a lookup that does not answer at
        once keeps its slot until it does."""
        jobs = self._jobs
        while jobs and self.in_flight < self.at_once:
            job = jobs[0]
            if not job.waiting or job.failed:
                jobs.popleft()
                continue
            national_id = job.waiting.pop()
            job.asked += 1
            self.in_flight += 1
            try:
                d = self.directory.lookup(national_id)
            except Exception:
                d = defer.fail()
            answered = []
            d.addBoth(answered.append)
            if answered:                      # at once: no callback needed
                self.in_flight -= 1
                job.answer(national_id, answered[0])
            else:
                answered.clear()
                d.addBoth(self._answered, job, national_id, answered)

    def _answered(self, _, job, national_id, answered):
        self.in_flight -= 1
        job.answer(national_id, answered[0])
        self._work()


class _Job:
    """One lookup_all: the IDs not asked yet, the answers, its Deferred."""

    __slots__ = ("waiting", "asked", "answered", "citizens", "failed", "done")

    def __init__(self, national_ids):
        self.waiting = national_ids
        self.asked = 0
        self.answered = 0
        self.citizens = {}
        self.failed = False
        self.done = defer.Deferred()

    def answer(self, national_id, result):
        if self.failed:
            return
        if isinstance(result, Failure):
            self.failed = True
            self.done.errback(_unanswered(result))
            return
        self.citizens[national_id] = result
        self.answered += 1
        if self.answered == self.asked and not self.waiting:
            self.done.callback(self.citizens)


def _unanswered(failure):
    if not failure.check(DirectoryUnavailable):
        # The type only: an adapter's message may carry the national ID it was asked.
        log.error("citizen directory lookup failed: %s", failure.type.__name__)
    return directory_down()


def directory_down():
    return DirectoryDown("the citizen directory cannot answer right now; nothing was "
                         "stored, retry shortly", retry_after=5)


def no_directory():
    return NoDirectory("recipients given by national_id need a citizen directory, and "
                       "this gateway has none configured (gateway.yaml directory:)")


@dataclass(frozen=True)
class Addressing:
    """What the directory said of a submission's national-ID entries, beside the
    recipients list it goes with (one per entry, in order): each
    recipient's national ID (None for a number entry) and Citizen (None: unknown)."""
    given: tuple                       # every entry in canonical form (the request hash)
    national_ids: tuple                # per recipient: the ID it was addressed by, or None
    citizens: tuple                    # per recipient: the directory's Citizen, or None
    unknown: int                       # recipients the directory did not know

    def address(self, message, index):
        """Mark the NewMessage built for recipient `index`."""
        national_id = self.national_ids[index]
        if national_id is None:
            return
        message.national_id = national_id
        citizen = self.citizens[index]
        message.citizen = citizen
        if citizen is None:            # a message to nobody: failed, no parts, no quota
            message.error = UNKNOWN_CITIZEN
            message.parts = []
            message.route = None
            message.fingerprint = None


def addressed(numbers, national_ids, citizens):
    """(recipients, Addressing): the number to send to for each entry, in order, with
    NO_NUMBER for an unknown citizen. As for numbers, each entry is a message: a national
    ID and the number it resolves to, both given, are two (as a number given twice is)."""
    recipients, ids, found, given = [], [], [], []
    unknown = 0
    for index, number in enumerate(numbers):
        national_id = national_ids.get(index)
        citizen = None
        if national_id is None:
            given.append(number)
        else:
            given.append({"national_id": national_id})
            citizen = citizens[national_id]
            if citizen is None:
                unknown += 1
                number = NO_NUMBER
            else:
                number = citizen.msisdn
        recipients.append(number)
        ids.append(national_id)
        found.append(citizen)
    return recipients, Addressing(tuple(given), tuple(ids), tuple(found), unknown)


def show_addressed(entry, recipient, national_id):
    """An answer's entry (the 202's, GET /v1/messages/{id}'s) for a message addressed by
    national ID: the ID as given and the number masked (None: an unknown citizen)."""
    entry["to"] = mask_msisdn(recipient) if recipient else None
    entry["national_id"] = national_id
    return entry
