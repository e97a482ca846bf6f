"""HTTP/1.1 server (httptools) and the agency API on top of it."""

from gateway.http.errors import ApiError, error_document
from gateway.http.server import (
    HTTPFactory, PathRouter, Request, Response, error_response, json_response)

__all__ = ["ApiError", "HTTPFactory", "PathRouter", "Request", "Response", "error_document",
           "error_response", "json_response"]
