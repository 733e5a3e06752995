"""Routes, their limits, CORS and the vendor-shaped answers to unreadable bodies."""

from stream.api.body import BodyProblem
from stream.api.routes import ROUTES, body_limit, body_problem, cors_headers, not_found, timeout
from stream.settings import ApiSettings


def test_every_vendor_endpoint_has_its_limit():
    api = ApiSettings()
    assert {p: (r.vendor, r.call_type, body_limit(r, api)) for p, r in ROUTES.items()} == {
        "/2/httpapi": ("amplitude", None, 1024 * 1024), "/batch": ("amplitude", None, 20 * 1024 * 1024),
        "/v1/track": ("segment", "track", 32 * 1024), "/v1/identify": ("segment", "identify", 32 * 1024),
        "/v1/page": ("segment", "page", 32 * 1024), "/v1/screen": ("segment", "screen", 32 * 1024),
        "/v1/group": ("segment", "group", 32 * 1024), "/v1/alias": ("segment", "alias", 32 * 1024),
        "/v1/batch": ("segment", None, 500 * 1024), "/v1/import": ("segment", None, 500 * 1024)}


def test_body_problems_in_each_vendors_shape():
    amp, seg = ROUTES["/2/httpapi"], ROUTES["/v1/batch"]
    assert body_problem(amp, BodyProblem.TOO_LARGE, "d") == (413, {"code": 413, "error": "Payload too large",
                                                                   "detail": "d"})
    assert body_problem(seg, BodyProblem.TOO_LARGE, "d") == (400, {"success": False, "code": "too_large",
                                                                   "message": "d"})
    assert body_problem(amp, BodyProblem.BAD_CONTENT_TYPE, "d")[0] == 415
    assert body_problem(seg, BodyProblem.BAD_GZIP, "d") == (400, {"success": False, "code": "invalid_gzip",
                                                                  "message": "d"})
    assert timeout(amp, 30) == (408, {"code": 408, "error": "Request timeout", "detail": "the request body did not "
                                      "arrive within 30s (api.request_timeout_s)"})


def test_unknown_paths_name_the_endpoints():
    assert not_found("/3/httpapi")["detail"].startswith("no endpoint at /3/httpapi; the API serves POST /2/httpapi")


def test_cors_for_any_origin_a_listed_origin_or_none():
    assert cors_headers("https://app.example", ["*"], False) == {"Access-Control-Allow-Origin": "*"}
    assert cors_headers("https://app.example", ["https://app.example"], True, "content-type") == {
        "Access-Control-Allow-Origin": "https://app.example", "Vary": "Origin",
        "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Allow-Headers": "content-type",
        "Access-Control-Max-Age": "86400"}
    assert cors_headers("https://evil.example", ["https://app.example"], True) == {}
    assert cors_headers("https://app.example", [], True) == {}
    assert cors_headers(None, ["*"], False) == {}
