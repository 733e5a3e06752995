"""Who may use the admin endpoints: a bearer token from the settings, compared in constant time (pure).

The access model: the probes (``/healthz``, ``/readyz``) and ``/metrics`` are open, as Kubernetes and Prometheus
need them and they carry no names; everything else the worker serves -- the export status, the admin API --
answers 401 unless the request carries ``Authorization: Bearer <admin.token>``; the console signs in with the same
token and then carries a session cookie (``stream.admin.console``). With no token configured, nobody is let in:
the admin endpoints are closed rather than open, and the console is not served.

Guessing the token is slowed down per client address (``stream.attempts``): after ``admin.max_failed_auth``
failures in ``admin.failed_auth_window_s``, an address is answered 429 with Retry-After before its token is even
compared. The client address and whether the client reached the worker over HTTPS come from X-Forwarded-For and
X-Forwarded-Proto only when the request comes from one of ``admin.trusted_proxies``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.attempts import FailedAttempts
from stream.clock import Clock, SystemClock

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies' networks from their settings (an address is a network of one)."""
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in n for n in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The address of the client: the peer's, or when the peer is a trusted proxy, the last address of
    X-Forwarded-For that is not one of the trusted proxies (what a client writes in the header itself is further
    left, and not believed)."""
    address = peer or "unknown"
    if not _trusted(peer, trusted) or not forwarded_for:
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        if not hop:
            break
        address = hop
        if not _trusted(hop, trusted):
            break
    return address


def secure_cookies(tls: bool, peer: str | None, forwarded_proto: str | None, trusted: Sequence[Network],
                   force: bool) -> bool:
    """Whether the console's cookies are marked Secure: when forced by the settings, when the request came over
    TLS, or when a trusted proxy says the client reached it over HTTPS (X-Forwarded-Proto: https; of a list, the
    first, the client's)."""
    if force or tls:
        return True
    if not forwarded_proto or not _trusted(peer, trusted):
        return False
    return forwarded_proto.split(",")[0].strip().lower() == "https"


@dataclass
class Access:
    """The admin side's access settings of one process: the token, the failed attempts per address, the trusted
    proxies, whether cookies are always Secure, the secrets to scrub from what the admin endpoints show."""

    token: str | None
    attempts: FailedAttempts = field(default_factory=lambda: FailedAttempts(10, 60))
    trusted: tuple[Network, ...] = ()
    force_secure: bool = False
    secrets: tuple[str, ...] = ()
    clock: Clock = field(default_factory=SystemClock)

    @classmethod
    def of(cls, settings: Any, clock: Clock | None = None) -> "Access":
        from stream.redact import configured_secrets
        a = settings.admin
        return cls(a.token.get_secret_value() if a.token is not None else None,
                   FailedAttempts(a.max_failed_auth, a.failed_auth_window_s), networks(a.trusted_proxies),
                   a.secure_cookies, tuple(configured_secrets(settings)), clock or SystemClock())

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        return client_address(peer, forwarded_for, self.trusted)

    def secure(self, tls: bool, peer: str | None, forwarded_proto: str | None) -> bool:
        return secure_cookies(tls, peer, forwarded_proto, self.trusted, self.force_secure)

    def retry_after_s(self, address: str) -> int | None:
        return self.attempts.retry_after_s(address, self.clock.now_ms())

    def failed(self, address: str) -> None:
        self.attempts.failed(address, self.clock.now_ms())

    def scrub(self, text: str) -> str:
        from stream.redact import SecretFilter
        return SecretFilter(self.secrets).scrub(text)


def too_many(retry_after_s: int) -> str:
    """Why an address is refused unseen, and when it may try again."""
    return (f"too many failed authentications from this address: try again in {retry_after_s} s, with the admin "
            "token (admin.token)")
