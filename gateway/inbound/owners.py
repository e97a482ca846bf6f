"""Which agency a 4040 number belongs to.

An agency's number is exact ("40401234"); a longer number under it ("404012345") belongs
to it too, unless another agency owns that longer number exactly (issue 8): the longest
configured number a destination starts with wins.
"""

ROOT_NUMBER = "4040"       # the authenticity check's number; no agency owns it


class NumberOwners:
    def __init__(self, agencies=()):
        # number → agency id; the config loader has refused a number claimed twice.
        self._owner = {number: agency.id for agency in agencies for number in agency.numbers}
        self._lengths = sorted({len(number) for number in self._owner}, reverse=True)

    def owner(self, number):
        """The agency id owning `number` (exactly, else by its longest configured
        prefix), or None."""
        owner = self._owner
        if number in owner:
            return owner[number]
        for length in self._lengths:
            if length < len(number):
                agency = owner.get(number[:length])
                if agency is not None:
                    return agency
        return None
