"""GET /v1/openapi.json: the document names exactly the routes the server answers, and
the running daemon answers as it says (schemathesis, against a daemon on loopback)."""

import json

import jsonschema_rs
import pytest
import schemathesis

from daemon_harness import KEYS, Daemon, Simulator, http_json, write_config
from gateway import __version__
from gateway.http import openapi
from gateway.http.api import AgencyAPI
from gateway.http.server import Request

TAX = KEYS["tax"]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SPEC = openapi.document()


def router_routes(router):
    """(METHOD, path template) of every route registered on the HTTP router."""
    routes = set()
    for path, handlers in router._exact.items():
        routes |= {(method, path) for method in handlers}
    for _prefix, template, handlers in router._prefixes:
        routes |= {(method, template) for method in handlers}
    return routes


def documented_routes(spec):
    return {(method.upper(), path) for path, item in spec["paths"].items()
            for method in item if method in METHODS}


def without_implied_head(routes):
    # HEAD is answered wherever GET is (the contract): documenting GET covers it.
    return {(m, p) for m, p in routes if not (m == "HEAD" and ("GET", p) in routes)}


def test_every_route_the_server_answers_is_documented_and_nothing_else():
    api = AgencyAPI(outbound=None, store=None, keyring=None, audit=None, clock=None)
    served = without_implied_head(router_routes(api.router))
    documented = without_implied_head(documented_routes(SPEC))
    assert served == documented
    assert ("GET", "/v1/openapi.json") in served


def test_the_document_is_openapi_3_1_with_the_packages_version():
    assert SPEC["openapi"].startswith("3.1.")
    assert SPEC["info"]["version"] == __version__
    schemathesis.openapi.from_dict(SPEC)          # loads: refs resolve, shapes are known
    # Every documented error code is one the API can give (errors.py), or the contract's.
    from gateway.http.errors import STATUS_FOR_CODE
    codes = SPEC["components"]["schemas"]["Error"]["properties"]["error"]["properties"][
        "code"]["enum"]
    assert set(STATUS_FOR_CODE) <= set(codes)


def test_the_document_is_served_without_a_key_and_is_the_file():
    api = AgencyAPI(outbound=None, store=None, keyring=None, audit=None, clock=None)
    response = api.router(Request("GET", "/v1/openapi.json", {}, {}, b"", "127.0.0.1"))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert json.loads(response.body) == SPEC


def validator(name):
    """A validator for one of the document's component schemas."""
    return jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": SPEC["components"]})


# -- against the running daemon -----------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    sim = Simulator("--receipt-delay", "0.05")
    directory = tmp_path_factory.mktemp("openapi")
    config, http_port = write_config(directory, sim.smpp_port)
    running = Daemon(config, http_port).start()
    yield running
    try:
        assert running.stop() == 0
    finally:
        sim.stop()


def test_a_sent_message_and_its_status_match_the_document(daemon):
    example = SPEC["paths"]["/v1/messages"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]["several"]["value"]
    code, accepted, _ = http_json(daemon.http_port, "POST", "/v1/messages", example, key=TAX)
    assert code == 202
    validator("Accepted").validate(accepted)
    message_id = accepted["messages"][0]["id"]
    delivered = daemon.wait_status(TAX, message_id, "delivered")
    validator("Message").validate(delivered)
    code, health, _ = http_json(daemon.http_port, "GET", "/healthz")
    assert code == 200
    validator("Health").validate(health)


# Broadcast bodies in NDJSON or CSV are documented as strings: sent as they are.
@schemathesis.serializer("application/x-ndjson", "text/csv")
def _text_body(ctx, value):
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


# The document as the package ships it (served byte for byte: see the test above), with
# the daemon's address given per call.  schemathesis.pytest.from_fixture would load it
# from the daemon, but it does not work with pytest 9 (it sets Function._nodeid).
API = schemathesis.openapi.from_dict(SPEC, config=schemathesis.Config.from_dict({
    "auth": {"openapi": {"bearerAuth": {"bearer": TAX}}},
    "generation": {"max-examples": 50, "mode": "all", "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
    "checks": {
        # What a schema can promise: no 5xx, and answers shaped as documented.  Whether
        # valid-looking data is accepted depends on who sends it (a sender belongs to
        # one agency, a text's length limit to its encoding): not the document's to say.
        "positive_data_acceptance": {"enabled": False},
        "max_response_time": 10,
    },
    "request-timeout": 10,
}))


@API.parametrize()
def test_the_daemon_answers_as_the_document_says(case, daemon):
    case.call_and_validate(base_url=f"http://127.0.0.1:{daemon.http_port}")
