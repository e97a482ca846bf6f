"""The directory over HTTP (`directory: {url: ...}`) in the real daemon, behind each of
its three users: national-ID recipients, the partner apps' identity check and the email
fallback (which cannot look a number up there: the email is `unavailable`, the SMS goes).
A small lookup service runs in this process (a thread); when it answers 500, both users
that must ask it answer `503 directory_unavailable`, nothing guessed."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
import yaml

from daemon_harness import KEYS, REPO, Daemon, http_json, write_config
from e2e_fixtures import ThreadedSmtp, sim  # noqa: F401 (fixtures)

TAX = KEYS["tax"]
APP = "demo-dolat-hamrah-key-00000000000"
NID, NUMBER, ADDRESS = "2233445562", "989127778899", "lookup@example.ir"


class LookupService:
    def __init__(self):
        self.down = False
        self.asked = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                service.asked.append(self.path)
                if service.down:
                    status, body = 500, b"{}"
                elif self.path == f"/shahkar/citizens/{NID}":
                    status, body = 200, json.dumps({"msisdn": NUMBER,
                                                    "email": ADDRESS}).encode()
                else:
                    status, body = 404, b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/shahkar"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def service():
    lookup = LookupService()
    yield lookup
    lookup.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, sim, service):
    smtp = ThreadedSmtp()
    directory = tmp_path_factory.mktemp("httpdir")
    path, http_port = write_config(directory, sim.smpp_port,
                                   citizens={"url": service.url, "timeout_s": 2,
                                             "cache_size": 0})
    config = yaml.safe_load(path.read_text())
    config["apps"] = str(REPO / "config" / "apps.yaml")
    config["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "from": "notify@payam.gov.ir"}
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    running = Daemon(path, http_port)
    running.national_ids.add(NID)
    running.start()
    yield running
    assert running.stop() == 0
    assert ADDRESS not in running.output()
    smtp.close()


def citizen_messages(daemon, national_id=NID, msisdn=NUMBER):
    query = urlencode({"national_id": national_id, "msisdn": msisdn})
    return http_json(daemon.http_port, "GET", "/v1/citizen/messages?" + query, key=APP)


def test_each_user_of_the_lookup_service_and_its_503(sim, daemon, service):
    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "text": "از راه شاهکار",
                                      "to": [{"national_id": NID}, {"national_id": "0012345679"}]})
    assert code == 202, sent
    found, unknown = sent["messages"]
    assert (unknown["status"], unknown["error"]) == ("failed", "unknown_citizen")
    daemon.wait_status(TAX, found["id"], "delivered")
    assert any(s["destination_addr"] == NUMBER for s in sim.submits())

    code, page, _ = citizen_messages(daemon)
    assert code == 200 and [m["id"] for m in page["messages"]] == [found["id"]], page
    assert citizen_messages(daemon, msisdn="09121234567")[0] == 403

    code, sent, _ = daemon.send(TAX, **{"from": "40401234", "to": "09121234567",
                                      "text": "by number", "fallback": "email"})
    assert code == 202, sent
    _, shown, _ = daemon.status(TAX, sent["messages"][0]["id"])
    assert shown["channels"]["email"] == "unavailable"

    service.down = True
    code, body, _ = daemon.send(TAX, **{"from": "40401234", "text": "x",
                                            "to": {"national_id": NID}})
    assert (code, body["error"]["code"]) == (503, "directory_unavailable"), body
    code, body, _ = citizen_messages(daemon)
    assert (code, body["error"]["code"]) == (503, "directory_unavailable"), body
