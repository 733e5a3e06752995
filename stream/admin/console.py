"""The web console under ``/console/`` on the worker's HTTP port: server-rendered pages over ``Admin``, the same
actions as the admin API and the CLI.

Sign-in: the login form takes the admin token; the session is a cookie (HttpOnly, SameSite=Strict,
Path=/console) holding ``<issued_ms>.<nonce>.<signature>``, the signature an HMAC-SHA256 under a key derived from
the admin token. Nothing is kept server-side, so a session opened on one worker is valid on every worker of the
deployment (a Service in front of several pods), survives a worker restart, lasts ``SESSION_S`` at most, and
ends everywhere when the token is rotated. Logging out clears the cookie and revokes its nonce on every worker:
through the console sessions topic, which every worker follows (``stream.admin.sessions``).

The cookies are Secure when the request came over TLS, when a trusted proxy says the client used HTTPS
(X-Forwarded-Proto from ``admin.trusted_proxies``), or always with ``admin.secure_cookies``. A refused sign-in
counts against the client's address (``stream.admin.auth.Access``): too many, and the address is answered 429
before its token is compared.

CSRF: every POST form carries ``csrf``, an HMAC of the session's nonce under the same key; a POST without it or
with another is answered 403. The login form is the exception: it carries the token itself, and signing in to
the one account there is grants nothing. SameSite=Strict and a Content-Security-Policy (``form-action 'self'``,
no inline scripts, no framing) are further layers.

The pages work without JavaScript; ``console.js`` adds the policy page's copy buttons and, while a backfill runs,
refreshes the backfills page's progress table in place (from ``/console/backfills/progress``), leaving the form
as it is being filled in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from markupsafe import Markup

from stream.admin import charts
from stream.admin.api import cohort_download, hours_query, membership_params, profile_params, text_param
from stream.admin.auth import Access, too_many
from stream.admin.service import Admin, AdminError
from stream.admin.sessions import Revoked, record
from stream.metrics import AUTH_FAILURES

log = logging.getLogger(__name__)

PREFIX = "/console"
COOKIE = "stream_console"
FLASH = "stream_console_flash"
SESSION_S = 12 * 3600
PREVIEW_ROWS = 10
HOURS = 48
SWITCH_WAIT_S = 10

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}

Handler = Callable[[web.Request, "Console"], Awaitable[web.StreamResponse]]


def _ms(value: int | None) -> str:
    if not value:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(value / 1000))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _pretty(doc: Any) -> str:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2, default=str).decode()


def _env() -> Environment:
    env = Environment(loader=PackageLoader("stream.admin", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(ms=_ms, duration=_duration, pretty=_pretty,
                       seg=lambda s: urllib.parse.quote(str(s), safe=""))
    return env


Publish = Callable[[tuple[bytes, bytes]], Awaitable[None]]


class Console:
    def __init__(self, admin: Admin, token: str, access: Access | None = None, revoked: Revoked | None = None,
                 publish: Publish | None = None):
        """``revoked``: the sessions logged out on any worker (followed from the console sessions topic);
        ``publish``: appends a revocation to that topic (None: this process only)."""
        self.admin = admin
        self.access = access or Access(token)
        self.key = hmac.new(token.encode(), b"stream console session v1", hashlib.sha256).digest()
        self.token_digest = hashlib.sha256(token.encode()).digest()
        self.revoked = revoked if revoked is not None else Revoked(SESSION_S * 1000)
        self.publish = publish
        self.env = _env()
        settings = getattr(admin, "settings", None)
        # the navigation shows the profiles page where the deployment has a source of profiles
        self.profiles_kept = settings is not None and bool(settings.profiles_projects())

    def now_ms(self) -> int:
        return self.access.clock.now_ms()

    def secure(self, request: web.Request) -> bool:
        """Whether this request's cookies are marked Secure (``stream.admin.auth.secure_cookies``)."""
        return self.access.secure(request.secure, request.remote, request.headers.get("X-Forwarded-Proto"))

    # --- sessions ----------------------------------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        body = f"{self.now_ms()}.{secrets.token_urlsafe(18)}"
        return f"{body}.{self._sign('session:' + body)}"

    def issued(self, request: web.Request) -> tuple[str, int] | None:
        """(nonce, issued_ms) of the request's valid session, else None."""
        value = request.cookies.get(COOKIE, "")
        issued, _, rest = value.partition(".")
        nonce, _, sig = rest.partition(".")
        if not (issued.isdigit() and len(issued) < 16 and nonce and sig):
            return None
        if not hmac.compare_digest(sig.encode(), self._sign(f"session:{issued}.{nonce}").encode()):
            return None
        age_ms = self.now_ms() - int(issued)
        if not 0 <= age_ms < SESSION_S * 1000 or nonce in self.revoked:
            return None
        return nonce, int(issued)

    def session(self, request: web.Request) -> str | None:
        """The nonce of the request's valid session, else None."""
        found = self.issued(request)
        return found[0] if found else None

    def csrf(self, nonce: str) -> str:
        return self._sign("csrf:" + nonce)

    async def revoke(self, nonce: str, issued_ms: int) -> None:
        """End the session here, then on every worker (through the console sessions topic)."""
        self.revoked.add(nonce, issued_ms, self.now_ms())
        if self.publish is not None:
            await self.publish(record(nonce, issued_ms, self.now_ms()))

    # --- rendering ---------------------------------------------------------------------------------------------
    def page(self, request: web.Request, template: str, http_status: int = 200, **ctx: Any) -> web.Response:
        nonce = request.get("console_session")
        flash = request.cookies.get(FLASH)
        html = self.env.get_template(template).render(
            prefix=PREFIX, path=request.path, csrf=self.csrf(nonce) if nonce else "", signed_in=nonce is not None,
            flash=urllib.parse.unquote(flash) if flash else None, profiles_kept=self.profiles_kept, **ctx)
        resp = web.Response(text=html, status=http_status, content_type="text/html")
        if flash:
            resp.del_cookie(FLASH, path=PREFIX, secure=self.secure(request) or None, httponly=True,
                            samesite="Strict")
        return _headers(resp)

    def redirect(self, request: web.Request, to: str, flash: str | None = None) -> web.Response:
        """A 303 to ``to``, with a message for the next page (the flash cookie)."""
        resp = _redirect(to)
        if flash:
            resp.set_cookie(FLASH, urllib.parse.quote(flash[:1000]), path=PREFIX, httponly=True, samesite="Strict",
                            secure=self.secure(request) or None)
        return resp


_CONSOLE = web.AppKey("console", Console)


def _headers(resp: web.StreamResponse) -> web.StreamResponse:
    resp.headers.update({"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                         "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                         "Cache-Control": "no-store"})
    return resp


def _redirect(to: str) -> web.Response:
    return _headers(web.Response(status=303, headers={"Location": to}))


def _error(request: web.Request, c: Console, exc: AdminError, **ctx: Any) -> web.Response:
    return c.page(request, "error.html", exc.status, status=exc.status, message=str(exc), **ctx)


def _page(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A signed-in view: GETs without a session go to the login page; POSTs also need the session's CSRF token."""
    async def view(request: web.Request) -> web.StreamResponse:
        c: Console = request.app[_CONSOLE]
        if not c.revoked.ready:     # a session logged out elsewhere must not pass while they are being read
            resp = c.page(request, "error.html", 503, status=503,
                          message="the console is starting: it is reading the sessions logged out on the other "
                                  "workers (console.sessions topic); reload in a few seconds")
            resp.headers["Retry-After"] = "5"
            return resp
        found = c.issued(request)
        if found is None:
            return _redirect(f"{PREFIX}/login")
        nonce = request["console_session"] = found[0]
        request["console_issued"] = found[1]
        if request.method == "POST":
            form = await request.post()
            given = form.get("csrf")
            if not isinstance(given, str) or not hmac.compare_digest(given, c.csrf(nonce)):
                return c.page(request, "error.html", 403, status=403,
                              message="the form's CSRF token is missing or not this session's: reload the page "
                                      "and submit again")
            request["form"] = form
        try:
            return await fn(request, c)
        except AdminError as exc:
            return _error(request, c, exc)
        except Exception as exc:   # Kafka or S3 unreachable, ...: say so on the page, keep the details in the log
            log.exception("console %s %s failed", request.method, request.path)
            return _error(request, c, AdminError(500, f"{type(exc).__name__}: {exc}"))
    return view


def _form(request: web.Request, name: str, default: str = "") -> str:
    value = request["form"].get(name, default)
    return value.strip() if isinstance(value, str) else default


# --- login ---------------------------------------------------------------------------------------------------------
async def login_form(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[_CONSOLE]
    if c.session(request) is not None:
        return _redirect(f"{PREFIX}/")
    return c.page(request, "login.html")


async def login(request: web.Request) -> web.StreamResponse:
    c: Console = request.app[_CONSOLE]
    address = c.access.client(request.remote, request.headers.get("X-Forwarded-For"))
    wait = c.access.retry_after_s(address)
    if wait is not None:          # checked before the token is even read
        AUTH_FAILURES.labels("console", "limited").inc()
        resp = c.page(request, "login.html", 429, error=too_many(wait))
        resp.headers["Retry-After"] = str(wait)
        return resp
    form = await request.post()
    given = form.get("token")
    if not isinstance(given, str) or not given.strip() or not hmac.compare_digest(
            hashlib.sha256(given.strip().encode()).digest(), c.token_digest):
        c.access.failed(address)
        AUTH_FAILURES.labels("console", "refused").inc()
        return c.page(request, "login.html", 401, error="that is not the admin token")
    resp = _redirect(f"{PREFIX}/")
    resp.set_cookie(COOKIE, c.new_session(), path=PREFIX, httponly=True, samesite="Strict", max_age=SESSION_S,
                    secure=c.secure(request) or None)
    return resp


async def logout(request: web.Request, c: Console) -> web.StreamResponse:
    flash = None
    try:
        await c.revoke(request["console_session"], request["console_issued"])
    except Exception as exc:
        log.warning("console: a logout could not be written to the console sessions topic: %s: %s",
                    type(exc).__name__, exc)
        flash = (f"logged out on this worker, but the other workers could not be told ({type(exc).__name__}: "
                 f"{exc}); the session's cookie is still valid there until it expires: rotate the admin token to "
                 "end every session now")
    resp = c.redirect(request, f"{PREFIX}/login", flash)
    resp.del_cookie(COOKIE, path=PREFIX, secure=c.secure(request) or None, httponly=True, samesite="Strict")
    return resp


# --- destinations --------------------------------------------------------------------------------------------------
async def destinations(request: web.Request, c: Console) -> web.StreamResponse:
    doc = await c.admin.status(HOURS)
    by_name = {d["destination"]: d for d in doc["destinations"]}
    out = []
    for d in c.admin.settings.destinations:
        exporters = [e for n, e in by_name.items() if n == d.name or n.startswith(d.name + ".")]
        main = by_name.get(d.name) or (exporters[0] if exporters else {})
        out.append({"settings": d, "enabled": main.get("enabled", d.enabled), "state": main.get("state", "-"),
                    "exporters": exporters})
    hourly = {e["destination"]: Markup(charts.bar_chart(f"{e['destination']}: events per hour", *_hourly(
        {h["hour"]: h["events"] for h in e["hours"]}, "events"))) for d in out for e in d["exporters"] if "hours" in e}
    return c.page(request, "destinations.html", destinations=out, generated_at=doc["generated_at"], hours=HOURS,
                  charts=hourly)


def _hourly(counts: dict[str, float], name: str) -> tuple[list[str], list[charts.Series]]:
    labels, values = charts.hour_series(counts)
    return labels, [charts.Series(name, values)] if labels else []


def _switch(on: bool) -> Handler:
    async def switch(request: web.Request, c: Console) -> web.StreamResponse:
        name = request.match_info["name"]
        doc = await c.admin.set_enabled(name, on, by="console")
        ctl = c.admin.control            # the state this worker follows: show the page once it has the change
        deadline = time.monotonic() + SWITCH_WAIT_S
        while ctl is not None and ctl.is_paused(name) == on and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        msg = f"{name}: exports {'enabled' if on else 'disabled'} ({', '.join(doc['exporters'])})"
        if doc.get("data_lost"):
            msg += f". Data lost while it was off: {_pretty(doc['data_lost'])}. {doc['hint']}"
        return c.redirect(request, f"{PREFIX}/", msg)
    return switch


async def verify(request: web.Request, c: Console) -> web.StreamResponse:
    name = request.match_info["name"]
    return c.page(request, "verify.html", name=name, doc=await c.admin.verify(name))


async def history(request: web.Request, c: Console) -> web.StreamResponse:
    name, hours = request.match_info["name"], hours_query(request, HOURS)
    return c.page(request, "history.html", name=name, doc=await c.admin.history(name, hours), hours=hours)


async def policy(request: web.Request, c: Console) -> web.StreamResponse:
    name = request.match_info["name"]
    value = request.query.get("enforce_encryption", "").strip().lower()
    if value not in ("", "0", "1", "false", "true", "on", "off"):
        raise AdminError(400, "enforce_encryption must be on or off")
    enforce = value in ("1", "true", "on")
    doc = c.admin.policy(name, enforce)
    docs = [(k, _pretty(v)) for k, v in doc.items() if isinstance(v, (dict, list)) and k != "prefixes"]
    return c.page(request, "policy.html", name=name, doc=doc, docs=docs, enforce=enforce)


# --- backfills -----------------------------------------------------------------------------------------------------
async def _backfills_page(request: web.Request, c: Console, status: int = 200, error: str | None = None,
                          form: dict[str, str] | None = None) -> web.StreamResponse:
    jobs = await c.admin.backfills()
    return c.page(request, "backfills.html", status, jobs=jobs, error=error, form=form or {},
                  running=any(j.get("state") == "running" for j in jobs),
                  destinations=[d.name for d in c.admin.settings.destinations])


async def backfills(request: web.Request, c: Console) -> web.StreamResponse:
    return await _backfills_page(request, c)


async def backfills_progress(request: web.Request, c: Console) -> web.StreamResponse:
    """The jobs table alone, which ``console.js`` puts in place of the page's while a backfill runs."""
    jobs = await c.admin.backfills()
    return c.page(request, "backfill_jobs.html", jobs=jobs, running=any(j.get("state") == "running" for j in jobs))


async def start_backfill(request: web.Request, c: Console) -> web.StreamResponse:
    form = {k: _form(request, k, d) for k, d in
            (("destination", ""), ("from", ""), ("to", ""), ("exports", "all"), ("source", "auto"))}
    try:
        if form["exports"] not in ("all", "events", "merged_ids") or \
                form["source"] not in ("auto", "accepted", "archive"):
            raise AdminError(400, "exports must be all, events or merged_ids; source auto, accepted or archive")
        if not (form["from"] and form["to"]):
            raise AdminError(400, "give the first hour (from) and the hour after the last (to), such as "
                                  "2024-03-01T00")
        req = c.admin.request(form["destination"], form["from"], form["to"], form["exports"], form["source"],
                              by="console")
        doc = await c.admin.start_backfill(req)
    except AdminError as exc:
        return await _backfills_page(request, c, exc.status, f"{exc.status}: {exc}", form)
    return c.redirect(request, f"{PREFIX}/backfills", f"backfill {doc['job']} started: {doc['destination']}, "
                                            f"{doc['from']} to {doc['to']}, {doc['hours_total']} hours")


async def cancel(request: web.Request, c: Console) -> web.StreamResponse:
    job = request.match_info["job"]
    doc = await c.admin.cancel(job, by="console")
    return c.redirect(request, f"{PREFIX}/backfills", f"backfill {job}: cancel {doc['cancel']}")


# --- imports, dead letters, cohorts --------------------------------------------------------------------------------
async def imports(request: web.Request, c: Console) -> web.StreamResponse:
    sources = await c.admin.import_status()
    name = (text_param(request.query.get("source"), "source") or "").strip()
    key = (text_param(request.query.get("key"), "key") or "").strip()
    preview, error, status = None, None, 200
    if name:
        try:
            preview = await c.admin.import_preview(name, key or None, PREVIEW_ROWS)
        except AdminError as exc:
            error, status = f"{exc.status}: {exc}", exc.status
    return c.page(request, "imports.html", status, sources=sources, preview=preview, error=error,
                  form={"source": name, "key": key}, names=[s.name for s in c.admin.settings.sources])


async def import_history(request: web.Request, c: Console) -> web.StreamResponse:
    """Every mirror file of a source, a page at a time (``GET /admin/imports/{name}/history``)."""
    from stream.imports.ops import HISTORY_LIMIT
    name = request.match_info["name"]
    before = text_param(request.query.get("before"), "before") or None
    doc = await c.admin.import_history(name, HISTORY_LIMIT, before)
    return c.page(request, "import_history.html", doc=doc, before=before)


async def import_retry(request: web.Request, c: Console) -> web.StreamResponse:
    name, key = request.match_info["name"], _form(request, "key")
    if not key:
        raise AdminError(400, "the form needs the key of the file to import again")
    doc = await c.admin.import_retry(name, [key])
    return c.redirect(request, f"{PREFIX}/imports", f"{name}: queued again: {', '.join(doc['queued'])}")


async def deadletters(request: web.Request, c: Console) -> web.StreamResponse:
    hours = hours_query(request, 24)
    doc = await c.admin.dead_letters(hours, 20)
    chart = Markup(charts.bar_chart("Dead letters per hour", *_hourly(
        {h["hour"]: sum(h["reasons"].values()) for h in doc["by_hour"]}, "dead letters")))
    return c.page(request, "deadletters.html", doc=doc, hours=hours, chart=chart)


async def profile_lookup(request: web.Request, c: Console) -> web.StreamResponse:
    """A user's profile (``Admin.profile``), looked up by the form's project and user_id (any user_id, a '/' too:
    they are query parameters); a refused lookup is shown on the page with its status."""
    project = (text_param(request.query.get("project"), "project") or "").strip()
    user_id = text_param(request.query.get("user_id"), "user_id") or ""
    doc, error, status = None, None, 200
    if "user_id" in request.query:
        try:
            doc = await c.admin.profile(*profile_params(project, user_id))
        except AdminError as exc:
            error, status = str(exc), exc.status
    return c.page(request, "profiles.html", status, doc=doc, error=error, status=status,
                  form={"project": project, "user_id": user_id},
                  projects=sorted(c.admin.settings.profiles_projects()))


async def cohorts(request: web.Request, c: Console) -> web.StreamResponse:
    """The cohorts and where each is synced; with ``user_id`` or ``amplitude_id``, the cohorts that user is in
    (``Admin.memberships``), or why the lookup was refused."""
    form = {k: (text_param(request.query.get(k), k) or "").strip() for k in ("user_id", "amplitude_id", "project")}
    lookup, error, status = None, None, 200
    if form["user_id"] or form["amplitude_id"]:
        try:
            lookup = await c.admin.memberships(*membership_params(request.query))
        except AdminError as exc:
            error, status = f"{exc.status}: {exc}", exc.status
    return c.page(request, "cohorts.html", status, cohorts=c.admin.cohorts()["cohorts"], form=form, lookup=lookup,
                  error=error)


def cohort_charts(doc: dict[str, Any]) -> list[Markup]:
    """One chart per sync of the cohort (destination and routing key): members, entering and exiting per completed
    sync."""
    out = []
    for s in doc["counts"]:
        routing = f" ({s['routing_key']})" if s["routing_key"] else ""
        labels = [p["stamp"].replace("T", " ") for p in s["points"]]
        out.append(Markup(charts.line_chart(
            f"{doc['id']} to {s['destination']}{routing}: members per sync", labels,
            [charts.Series(name, tuple(p[name] for p in s["points"])) for name in ("members", "entering", "exiting")])))
    return out


async def cohort(request: web.Request, c: Console) -> web.StreamResponse:
    doc = await c.admin.cohort(request.match_info["id"])
    return c.page(request, "cohort.html", doc=doc, charts=cohort_charts(doc),
                  history=list(reversed(doc["history"])))


async def cohort_file(request: web.Request, c: Console) -> web.StreamResponse:
    """A file of a completed sync of the cohort, downloaded through the admin service (no other key of the
    bucket)."""
    return await cohort_download(request, c.admin, _headers)


async def cohort_sync(request: web.Request, c: Console) -> web.StreamResponse:
    """"Sync now": the same action as POST /admin/cohorts/{id}/syncs."""
    cohort_id = request.match_info["id"]
    doc = await c.admin.cohort_sync(cohort_id, _form(request, "destination") or None, by="console")
    states = ", ".join(f"{s['destination']}{' (' + s['routing_key'] + ')' if s['routing_key'] else ''}: "
                       f"{s['state']}" for s in doc["syncs"])
    waiting = "; it waits for a worker running the cohorts stage" if doc["waiting_for_worker"] else ""
    return c.redirect(request, f"{PREFIX}/cohorts/{urllib.parse.quote(cohort_id, safe='')}",
                      f"sync now of {cohort_id} (request {doc['request']}): {states}{waiting}")


async def cohort_members(request: web.Request, c: Console) -> web.StreamResponse:
    """A static cohort's upload: a text file (one user id per line) or the pasted ids, replacing its list."""
    from stream.cohorts import static
    cohort_id = request.match_info["id"]
    upload = request["form"].get("file")
    text = _form(request, "user_ids")
    if isinstance(upload, web.FileField) and upload.filename:
        try:
            text = upload.file.read().decode("utf-8")
        except UnicodeDecodeError:
            raise AdminError(400, "the file is not UTF-8 text: upload one user id per line in UTF-8") from None
    if not text.strip():
        raise AdminError(400, "choose a file or paste the user ids, one per line")
    try:
        ids = static.parse_lines(text)
    except static.StaticError as exc:
        raise AdminError(400, str(exc)) from None
    doc = await c.admin.upload_members(cohort_id, ids, by="console")
    return c.redirect(request, f"{PREFIX}/cohorts/{urllib.parse.quote(cohort_id, safe='')}",
                      f"{cohort_id}: {doc['members']} user ids stored in {', '.join(doc['stored'])}; the next syncs "
                      "list them")


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = resources.files("stream.admin").joinpath("templates", name).read_bytes()
    resp = web.Response(body=body, content_type=STATIC[name])
    resp.headers["Cache-Control"] = "max-age=300"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


async def _to_slash(request: web.Request) -> web.StreamResponse:
    return _redirect(f"{PREFIX}/")


def add_routes(app: web.Application, admin: Admin, access: Access, revoked: Revoked | None = None,
               publish: Publish | None = None) -> None:
    """Mount the console on ``app``; its paths authenticate themselves (``stream.web.admin_guard`` lets them
    through). ``revoked`` and ``publish``: see ``Console``."""
    assert access.token is not None
    app[_CONSOLE] = Console(admin, access.token, access, revoked, publish)
    g, p = app.router.add_get, app.router.add_post
    g(PREFIX, _to_slash)
    g(f"{PREFIX}/static/{{file}}", static)
    g(f"{PREFIX}/login", login_form)
    p(f"{PREFIX}/login", login)
    p(f"{PREFIX}/logout", _page(logout))
    g(f"{PREFIX}/", _page(destinations))
    p(f"{PREFIX}/destinations/{{name}}/enable", _page(_switch(True)))
    p(f"{PREFIX}/destinations/{{name}}/disable", _page(_switch(False)))
    p(f"{PREFIX}/destinations/{{name}}/verify", _page(verify))
    g(f"{PREFIX}/destinations/{{name}}/history", _page(history))
    g(f"{PREFIX}/destinations/{{name}}/policy", _page(policy))
    g(f"{PREFIX}/backfills", _page(backfills))
    g(f"{PREFIX}/backfills/progress", _page(backfills_progress))
    p(f"{PREFIX}/backfills", _page(start_backfill))
    p(f"{PREFIX}/backfills/{{job}}/cancel", _page(cancel))
    g(f"{PREFIX}/imports", _page(imports))
    p(f"{PREFIX}/imports/{{name}}/retry", _page(import_retry))
    g(f"{PREFIX}/imports/{{name}}/history", _page(import_history))
    g(f"{PREFIX}/deadletters", _page(deadletters))
    g(f"{PREFIX}/cohorts", _page(cohorts))
    g(f"{PREFIX}/cohorts/{{id}}", _page(cohort))
    g(f"{PREFIX}/cohorts/{{id}}/file", _page(cohort_file))
    p(f"{PREFIX}/cohorts/{{id}}/sync", _page(cohort_sync))
    p(f"{PREFIX}/cohorts/{{id}}/members", _page(cohort_members))
    g(f"{PREFIX}/profiles", _page(profile_lookup))


POST_ROUTES = ["/logout", "/destinations/{name}/enable", "/destinations/{name}/disable",
               "/destinations/{name}/verify", "/backfills", "/backfills/{job}/cancel", "/imports/{name}/retry",
               "/cohorts/{id}/sync", "/cohorts/{id}/members"]
"""The POST routes that need the session's CSRF token (all but the login), relative to ``PREFIX``."""
