"""Prefix routing: which operators may carry a part to an MSISDN, in order of preference.

The first rule (in file order) with a prefix of the number wins, whatever the prefix
lengths; numbers no rule matches go to the default operator. Called for every part at
dispatch, so the rules are compiled into one dict per prefix length, and answers are
memoised by the longest prefix length used (a handful of keys for real rule sets).
"""

_CACHE_LIMIT = 65536


class OperatorRouter:
    def __init__(self, routing):
        self.default = routing.default
        self._no_match = (routing.default,) if routing.default else ()
        tables = {}                        # length → {prefix: (rule index, candidates)}
        for index, rule in enumerate(routing.rules):
            candidates = (rule.operator,) + tuple(rule.fallback)
            for prefix in rule.prefixes:
                tables.setdefault(len(prefix), {}).setdefault(prefix, (index, candidates))
        self._tables = tuple(sorted(tables.items()))
        self._key_length = max(tables, default=0)
        self._cache = {}
        # Every operator that may carry a part preferring `operator`, in the order the
        # rules name them (the operator itself first).
        carriers = {}
        for rule in routing.rules:
            names = carriers.setdefault(rule.operator, [rule.operator])
            names.extend(name for name in rule.fallback if name not in names)
        if routing.default:
            carriers.setdefault(routing.default, [routing.default])
        self._carriers = {operator: tuple(names) for operator, names in carriers.items()}

    def candidates(self, msisdn):
        """Preferred operator first, then its fallbacks; (default,) or () on no match."""
        key = msisdn[:self._key_length]
        found = self._cache.get(key)
        if found is None:
            found = self._lookup(key)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = found
        return found

    def preferred(self, msisdn):
        """The operator a part to `msisdn` goes to when all are up (its route), or None."""
        # A remembered prefix answered here, without a call to candidates(): a
        # broadcast asks this of each of its recipients before its 202.
        candidates = self._cache.get(msisdn[:self._key_length])
        if candidates is None:
            candidates = self.candidates(msisdn)
        return candidates[0] if candidates else None

    def carriers(self, operator):
        """Operators that may carry parts whose route is `operator`: itself, then the
        fallbacks of its rules; () for an operator no rule names."""
        return self._carriers.get(operator, ())

    def choose(self, msisdn, is_bound):
        """The first candidate with a bound session, or None: the caller waits for one."""
        for operator in self.candidates(msisdn):
            if is_bound(operator):
                return operator
        return None

    def _lookup(self, key):
        best = None
        for length, table in self._tables:
            hit = table.get(key[:length])
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return best[1] if best is not None else self._no_match
