"""The admin endpoint: what `payam-gateway status` shows and what `reload` triggers.

Served on its own address (`admin.listen`, loopback by default), apart from the agency
API: it has no keys, so it must not be reachable from where agencies call. It knows
nothing of the service: it is handed `status()` (a Deferred of the status document) and
`reload()` (the same as SIGHUP: True, or False with the problem kept by the caller).
"""

from gateway.http.server import PathRouter, json_response
from gateway.model import PRIORITY_NAMES


class AdminAPI:
    def __init__(self, status, reload):
        self._status = status
        self._reload = reload
        self.router = PathRouter()
        self.router.add("GET", "/status", self.get_status)
        self.router.add("POST", "/reload", self.post_reload)

    def get_status(self, request):
        d = self._status()
        d.addCallback(lambda document: json_response(200, document))
        return d

    def post_reload(self, request):
        reloaded, problem = self._reload()
        document = {"reloaded": bool(reloaded)}
        if not reloaded:
            document["problem"] = problem or "see the daemon's log"
        return json_response(200, document)


def status_document(operators, queue_summary, now, pid):
    """operators: {name: {"bound", "binds"}}; queue_summary: the store's
    {priority: (parts queued, seconds the longest-waiting due one has waited)} → the
    status document (oldest_age_s None while nothing waits)."""
    queue = {}
    for priority, name in sorted(PRIORITY_NAMES.items()):
        parts, waited = queue_summary.get(priority, (0, 0.0))
        queue[name] = {"parts": parts,
                       "oldest_age_s": round(waited, 1) if parts else None}
    return {"pid": pid, "operators": operators, "queue": queue}
