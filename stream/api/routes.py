"""The API's routes, their body limits, CORS, and the answers to unreadable bodies (pure, no HTTP framework)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from stream.api.body import BodyProblem
from stream.settings import ApiSettings


@dataclass(frozen=True)
class Route:
    path: str
    vendor: Literal["amplitude", "segment"]
    call_type: str | None    # Segment: the message type a single call implies; None for batches


ROUTES: dict[str, Route] = {r.path: r for r in (
    Route("/2/httpapi", "amplitude", None),
    Route("/batch", "amplitude", None),
    *(Route(f"/v1/{t}", "segment", t) for t in ("track", "identify", "page", "screen", "group", "alias")),
    Route("/v1/batch", "segment", None),
    Route("/v1/import", "segment", None),    # Segment's older name of /v1/batch
)}


def body_limit(route: Route, api: ApiSettings) -> int:
    if route.path == "/2/httpapi":
        return api.amplitude_httpapi_max_bytes
    if route.path == "/batch":
        return api.amplitude_batch_max_bytes
    return api.segment_max_batch_bytes if route.call_type is None else api.segment_max_message_bytes


_AMPLITUDE = {
    BodyProblem.TOO_LARGE: (413, "Payload too large"),
    BodyProblem.BAD_CONTENT_TYPE: (415, "Unsupported Media Type"),
    BodyProblem.BAD_ENCODING: (415, "Unsupported Media Type"),
    BodyProblem.BAD_GZIP: (400, "Invalid JSON request body"),
}
# Segment answers 400 to an oversized body (FORMATS.md §3.1)
_SEGMENT = {
    BodyProblem.TOO_LARGE: (400, "too_large"),
    BodyProblem.BAD_CONTENT_TYPE: (415, "unsupported_media_type"),
    BodyProblem.BAD_ENCODING: (415, "unsupported_media_type"),
    BodyProblem.BAD_GZIP: (400, "invalid_gzip"),
}


def body_problem(route: Route, problem: BodyProblem, detail: str) -> tuple[int, dict]:
    """Status and body for a body that cannot be read, in the vendor's shape."""
    if route.vendor == "amplitude":
        status, message = _AMPLITUDE[problem]
        return status, {"code": status, "error": message, "detail": detail}
    status, code = _SEGMENT[problem]
    return status, {"success": False, "code": code, "message": detail}


def busy(route: Route, limit: int) -> tuple[int, dict]:
    """The answer when the process holds too many request bytes already: send again later."""
    detail = (f"this server holds {limit} bytes of requests already (api.max_inflight_bytes); the request was not "
              "stored: send it again after Retry-After seconds")
    if route.vendor == "amplitude":
        return 503, {"code": 503, "error": "Service unavailable", "detail": detail}
    return 503, {"success": False, "code": "unavailable", "message": detail}


def timeout(route: Route, seconds: float) -> tuple[int, dict]:
    detail = f"the request body did not arrive within {seconds:g}s (api.request_timeout_s)"
    if route.vendor == "amplitude":
        return 408, {"code": 408, "error": "Request timeout", "detail": detail}
    return 408, {"success": False, "code": "timeout", "message": detail}


def not_found(path: str) -> dict:
    return {"code": 404, "error": "Invalid request path",
            "detail": f"no endpoint at {path[:200]}; the API serves POST " + ", ".join(ROUTES)
            + " and GET /healthz, /readyz, /metrics"}


def method_not_allowed(method: str, path: str) -> dict:
    return {"code": 405, "error": "Method not allowed", "detail": f"{path} takes POST (and OPTIONS), not {method}"}


CORS_METHODS = "POST, OPTIONS"
CORS_HEADERS = "Content-Type, Content-Encoding, Authorization"
CORS_MAX_AGE = "86400"


def cors_headers(origin: str | None, allowed: list[str], preflight: bool,
                 requested_headers: str | None = None) -> dict[str, str]:
    """CORS response headers for a request from ``origin`` (none when CORS is off or the origin is not allowed)."""
    if origin is None or not allowed:
        return {}
    if "*" in allowed:
        out = {"Access-Control-Allow-Origin": "*"}
    elif origin in allowed:
        out = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    else:
        return {}
    if preflight:
        out["Access-Control-Allow-Methods"] = CORS_METHODS
        out["Access-Control-Allow-Headers"] = requested_headers or CORS_HEADERS
        out["Access-Control-Max-Age"] = CORS_MAX_AGE
    return out
