"""The lookup service's answers kept a while: national ID → Citizen or None (not
registered), each for `ttl_s` seconds of the injected clock, at most `size` entries (the
oldest stored goes first). Only answers are kept, never a failure: a directory that was
down is asked again at the next lookup."""

from collections import OrderedDict

MISSING = object()               # get(): no fresh answer kept


class AnswerCache:
    def __init__(self, ttl_s, size, clock):
        self.ttl_s = ttl_s
        self.size = size
        self.clock = clock
        self._entries = OrderedDict()     # national ID → (expires at, Citizen | None)

    def get(self, national_id):
        """The kept answer (a Citizen or None), or MISSING when none is fresh."""
        entry = self._entries.get(national_id)
        if entry is None:
            return MISSING
        expires_at, answer = entry
        if self.clock.seconds() >= expires_at:
            del self._entries[national_id]
            return MISSING
        return answer

    def put(self, national_id, answer):
        if self.size <= 0 or self.ttl_s <= 0:
            return
        self._entries.pop(national_id, None)
        while len(self._entries) >= self.size:
            self._entries.popitem(last=False)
        self._entries[national_id] = (self.clock.seconds() + self.ttl_s, answer)

    def __len__(self):
        return len(self._entries)

