"""Who may use the admin endpoints: a bearer token from the settings, compared in constant time (pure).

The access model: the probes (``/healthz``, ``/readyz``) and ``/metrics`` are open, as Kubernetes and Prometheus
need them and they carry no names; everything else the worker serves -- the export status, the admin API --
answers 401 unless the request carries ``Authorization: Bearer <admin.token>``; the console signs in with the same
token and then carries a session cookie (``stream.admin.console``). With no token configured, nobody is let in:
the admin endpoints are closed rather than open, and the console is not served.
"""

from __future__ import annotations

import hmac

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REALM = 'Bearer realm="stream"'


def is_open(path: str) -> bool:
    return path in OPEN_PATHS


def refusal(authorization: str | None, token: str | None) -> str | None:
    """Why the request may not use the admin endpoints, None when it may."""
    if token is None:
        return ("the admin endpoints are closed: no admin token is configured (set STREAM_ADMIN__TOKEN, or "
                "admin.token)")
    if not authorization:
        return "send the admin token as Authorization: Bearer <token>"
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not given:
        return "send the admin token as Authorization: Bearer <token>"
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return "the bearer token is not the admin token"
    return None
