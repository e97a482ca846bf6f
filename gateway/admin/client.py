"""`payam-gateway status` and `payam-gateway reload`: the admin endpoint, asked over
loopback HTTP, its answer printed for people (or as JSON)."""

import http.client
import json

TIMEOUT_S = 10.0


class Unreachable(Exception):
    """No daemon answers on the admin address."""


def ask(address, method, path):
    host, port = address
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        response = conn.getresponse()
        body = response.read()
    except OSError as error:
        raise Unreachable(f"no daemon answers on the admin endpoint {host}:{port} "
                          f"(admin.listen): {error}") from None
    finally:
        conn.close()
    if response.status != 200:
        raise Unreachable(f"the admin endpoint {host}:{port} answered {response.status}")
    try:
        return json.loads(body)
    except ValueError:         # something else listens there (UnicodeDecodeError too)
        raise Unreachable(f"{host}:{port} (admin.listen) answered, but not as the admin "
                          "endpoint does (not JSON)") from None


def format_status(document):
    """The status document as a few aligned lines."""
    lines = [f"daemon pid {document['pid']}", "", "operator      bound / binds"]
    for name, state in document["operators"].items():
        mark = "" if state["bound"] >= 1 else "   <- no bound session"
        lines.append(f"  {name:<12}{state['bound']:>5} / {state['binds']}{mark}")
    lines += ["", "priority      queued parts   oldest queued"]
    for name, queue in document["queue"].items():
        age = queue["oldest_age_s"]
        lines.append(f"  {name:<12}{queue['parts']:>12}   "
                     + (_age(age) if age is not None else "-"))
    return "\n".join(lines)


def _age(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
