"""GET /v1/openapi.json: the OpenAPI 3.1 document of the agency API.

The document is a static file beside this module (openapi.json), read once and served
as it is; tests/test_openapi.py keeps it and the router's routes the same.
"""

import json
from functools import lru_cache
from importlib.resources import files

from gateway import __version__
from gateway.http.server import JSON_TYPE, Response


def document():
    """The document as a dict (its info.version is the package's version)."""
    text = files("gateway.http").joinpath("openapi.json").read_text(encoding="utf-8")
    spec = json.loads(text)
    spec["info"]["version"] = __version__
    return spec


@lru_cache(maxsize=1)
def _body():
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def serve(request):
    """The route handler: no key needed, the same bytes every time."""
    return Response(200, _body(), {"Content-Type": JSON_TYPE})
