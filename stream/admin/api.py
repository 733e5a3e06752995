"""The admin API on the worker's HTTP port: thin aiohttp views over ``stream.admin.service.Admin``.

Every path is behind the admin token (``stream.admin.auth``); ``/admin/openapi.json`` describes them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from stream.admin.openapi import OPENAPI
from stream.admin.service import Admin, AdminError

_ADMIN = web.AppKey("admin", Admin)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=orjson.OPT_INDENT_2), status=status,
                        content_type="application/json")


MAX_HOURS = 24 * 366
MAX_SAMPLES = 500
MAX_TEXT = 1024
"""The longest text query parameter (a destination's name, an object key)."""


def int_param(value: str | None, name: str, default: int, low: int, high: int, what: str) -> int:
    """A whole-number query parameter between ``low`` and ``high``; an AdminError 400 naming it otherwise."""
    if value is None:
        return default
    text = value.strip()
    if not (text.isascii() and text.lstrip("-").isdigit() and len(text) <= 12):
        raise AdminError(400, f"{name} must be a whole number ({what}), {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        raise AdminError(400, f"{name} must be between {low} and {high}")
    return number


def bool_param(value: str | None, name: str) -> bool:
    """A true/false query parameter (true, false, 1, 0; absent: false); an AdminError 400 naming it otherwise."""
    if value is None:
        return False
    text = value.strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise AdminError(400, f"{name} must be true or false")
    return text in ("true", "1")


def text_param(value: str | None, name: str) -> str | None:
    """A text query parameter of at most MAX_TEXT characters."""
    if value is not None and len(value) > MAX_TEXT:
        raise AdminError(400, f"{name} must be at most {MAX_TEXT} characters")
    return value


def hours_query(request: web.Request, default: int = 48) -> int:
    """The ``hours`` query parameter (the latest hours to list), 1 to 8784; a 400 otherwise."""
    return int_param(request.query.get("hours"), "hours", default, 1, MAX_HOURS,
                     "the number of latest hours to list")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AdminError(400, "the body must be a JSON object")
    return body


def _view(fn: Callable[[web.Request, Admin], Awaitable[Any]], status: int = 200):
    async def view(request: web.Request) -> web.Response:
        try:
            return _json(await fn(request, request.app[_ADMIN]), status)
        except AdminError as exc:
            return _json({"error": str(exc)}, exc.status)
    return view


def _exports(body: dict[str, Any]) -> str:
    exports = body.get("exports", "all")
    if exports not in ("all", "events", "merged_ids"):
        raise AdminError(400, "exports must be all, events or merged_ids")
    return exports


async def _status(r: web.Request, a: Admin) -> Any:
    return await a.status(hours_query(r))


async def _destinations(r: web.Request, a: Admin) -> Any:
    status = {d["destination"]: d for d in (await a.status(1))["destinations"]}
    out = []
    for d in a.settings.destinations:
        out.append({"name": d.name, "project": d.project, "layout": d.layout, "exports": d.exports,
                    "bucket": d.bucket, "prefix": d.prefix, "region": d.region or a.settings.s3.region,
                    "encryption": d.encryption.type, "role_arn": d.role_arn, "archive": d.archive,
                    "configured_enabled": d.enabled,
                    "state": status.get(d.name, {}).get("state"), "enabled": status.get(d.name, {}).get("enabled")})
    return {"destinations": out}


async def _history(r: web.Request, a: Admin) -> Any:
    return await a.history(r.match_info["name"], hours_query(r))


def _switch(on: bool):
    async def switch(r: web.Request, a: Admin) -> Any:
        exports = _exports(await _body(r))
        return await a.set_enabled(r.match_info["name"], on, exports, by="api")
    return switch


async def _verify(r: web.Request, a: Admin) -> Any:
    return await a.verify(r.match_info["name"])


async def _policy(r: web.Request, a: Admin) -> Any:
    return a.policy(r.match_info["name"], bool_param(r.query.get("enforce_encryption"), "enforce_encryption"))


async def _backfills(r: web.Request, a: Admin) -> Any:
    return {"backfills": await a.backfills(text_param(r.query.get("destination"), "destination"))}


async def _start_backfill(r: web.Request, a: Admin) -> Any:
    body = await _body(r)
    missing = [k for k in ("destination", "from", "to") if not isinstance(body.get(k), str)]
    if missing:
        raise AdminError(400, f"the body needs {', '.join(missing)} (strings, hours such as 2024-03-01T00)")
    source = body.get("source", "auto")
    if source not in ("auto", "accepted", "archive"):
        raise AdminError(400, "source must be auto, accepted or archive")
    req = a.request(body["destination"], body["from"], body["to"], _exports(body), source, by="api")
    return await a.start_backfill(req)


async def _backfill(r: web.Request, a: Admin) -> Any:
    return await a.backfill(r.match_info["job"])


async def _cancel(r: web.Request, a: Admin) -> Any:
    return await a.cancel(r.match_info["job"], by="api")


async def _deadletters(r: web.Request, a: Admin) -> Any:
    samples = int_param(r.query.get("samples"), "samples", 20, 0, MAX_SAMPLES, "the latest dead letters to show")
    return await a.dead_letters(hours_query(r, 24), samples)


async def _imports(r: web.Request, a: Admin) -> Any:
    return {"sources": await a.import_status()}


async def _import_history(r: web.Request, a: Admin) -> Any:
    from stream.imports.ops import HISTORY_LIMIT, HISTORY_MAX
    limit = int_param(r.query.get("limit"), "limit", HISTORY_LIMIT, 1, HISTORY_MAX, "the most files of a page")
    return await a.import_history(r.match_info["name"], limit, text_param(r.query.get("before"), "before"))


async def _import_preview(r: web.Request, a: Admin) -> Any:
    rows = int_param(r.query.get("rows"), "rows", 10, 1, 100, "the rows to preview")
    return await a.import_preview(r.match_info["name"], text_param(r.query.get("key"), "key"), rows)


async def _import_retry(r: web.Request, a: Admin) -> Any:
    keys = (await _body(r)).get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k for k in keys):
        raise AdminError(400, 'the body needs "keys": a list of object keys of the source')
    return await a.import_retry(r.match_info["name"], keys)


async def _cohort_sync(r: web.Request, a: Admin) -> Any:
    destination = (await _body(r)).get("destination")
    if destination is not None and not isinstance(destination, str):
        raise AdminError(400, 'destination must be a string: the name of one of the cohort\'s destinations')
    return await a.cohort_sync(r.match_info["id"], destination, by="api")


async def _cohorts(r: web.Request, a: Admin) -> Any:
    return a.cohorts()


async def _cohort(r: web.Request, a: Admin) -> Any:
    return await a.cohort(r.match_info["id"])


async def _cohort_file(request: web.Request) -> web.StreamResponse:
    """A file of a completed sync of the cohort (``?key=``), as text/csv."""
    try:
        return await cohort_download(request, request.app[_ADMIN])
    except AdminError as exc:
        return _json({"error": str(exc)}, exc.status)


async def cohort_download(request: web.Request, a: Admin,
                          wrap: Callable[[web.StreamResponse], web.StreamResponse] = lambda r: r) -> web.StreamResponse:
    """Stream a file of a completed sync of the cohort named in the path (``?key=``; no other key of the bucket) as
    a text/csv attachment (``wrap`` adds a surface's own headers); ``AdminError`` before anything is sent."""
    key = (text_param(request.query.get("key"), "key") or "").strip()
    if not key:
        raise AdminError(400, "give key: the S3 key of one of the cohort's files (its history lists them)")
    first, rest = await a.cohort_file(request.match_info["id"], key)
    name = key.rsplit("/", 1)[-1].replace('"', "")
    resp = wrap(web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                            "Content-Disposition": f'attachment; filename="{name}"'}))
    await resp.prepare(request)
    await resp.write(first)
    async for chunk in rest:
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def members_body(raw: bytes, content_type: str) -> list[Any]:
    """The user ids of an upload: a JSON body ``{"user_ids": [...]}``, or text/plain, one user id per line."""
    from stream.cohorts import static
    if content_type.startswith("text/plain"):
        try:
            return static.parse_lines(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise AdminError(400, "the body is not UTF-8 text: send one user id per line in UTF-8") from None
        except static.StaticError as exc:
            raise AdminError(400, str(exc)) from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AdminError(400, f"the body is not JSON: {exc}; send {{\"user_ids\": [...]}} or text/plain, one user "
                         "id per line") from None
    if not isinstance(body, dict) or not isinstance(body.get("user_ids"), list):
        raise AdminError(400, 'the body needs "user_ids": a list of user ids (strings)')
    return body["user_ids"]


async def _upload_members(r: web.Request, a: Admin) -> Any:
    return await a.upload_members(r.match_info["id"], members_body(await r.read(), r.content_type), by="api")


def membership_params(query: Any) -> tuple[str | None, int | None, int | None]:
    """The user_id, amplitude_id and project of a memberships lookup (empty ones: None); a 400 naming a wrong
    one."""
    user_id = (text_param(query.get("user_id"), "user_id") or "").strip() or None
    aid = (query.get("amplitude_id") or "").strip()
    if aid and not (aid.isascii() and aid.isdigit() and len(aid) <= 18):
        raise AdminError(400, "amplitude_id must be a whole number (an amplitude_id, at most 18 digits)")
    project = (query.get("project") or "").strip()
    return user_id, int(aid) if aid else None, int_param(project, "project", 0, 0, MAX_PROJECT, "a project id") \
        if project else None


async def _memberships(r: web.Request, a: Admin) -> Any:
    return await a.memberships(*membership_params(r.query))


MAX_PROJECT = 2**32 - 1
"""The largest project id (a profile's key holds it in 4 bytes)."""


def profile_params(project: str, user_id: str) -> tuple[int, str]:
    """The project and user_id of a profile lookup; an AdminError 400 naming the one that is not right."""
    p = int_param(project, "project", 0, 0, MAX_PROJECT, "a project id")
    if not user_id.strip():
        raise AdminError(400, "user_id must not be empty: give the user_id of the profile to show")
    if len(user_id) > MAX_TEXT:
        raise AdminError(400, f"user_id must be at most {MAX_TEXT} characters")
    return p, user_id


async def _profile(r: web.Request, a: Admin) -> Any:
    return await a.profile(*profile_params(r.match_info["project"], r.match_info["user_id"]))


async def _openapi(r: web.Request) -> web.Response:
    return _json(OPENAPI)


def add_routes(app: web.Application, admin: Admin) -> None:
    app[_ADMIN] = admin
    g, p = app.router.add_get, app.router.add_post
    app.router.add_get("/admin/openapi.json", _openapi)
    g("/admin/status", _view(_status))
    g("/admin/destinations", _view(_destinations))
    g("/admin/destinations/{name}/history", _view(_history))
    p("/admin/destinations/{name}/enable", _view(_switch(True)))
    p("/admin/destinations/{name}/disable", _view(_switch(False)))
    p("/admin/destinations/{name}/verify", _view(_verify))
    g("/admin/destinations/{name}/policy", _view(_policy))
    g("/admin/backfills", _view(_backfills))
    p("/admin/backfills", _view(_start_backfill, 202))
    g("/admin/backfills/{job}", _view(_backfill))
    app.router.add_delete("/admin/backfills/{job}", _view(_cancel))
    g("/admin/deadletters", _view(_deadletters))
    g("/admin/imports", _view(_imports))
    g("/admin/imports/{name}/preview", _view(_import_preview))
    g("/admin/imports/{name}/history", _view(_import_history))
    p("/admin/imports/{name}/retry", _view(_import_retry, 202))
    g("/admin/cohorts", _view(_cohorts))
    g("/admin/cohorts/{id}", _view(_cohort))
    g("/admin/cohorts/{id}/file", _cohort_file)
    app.router.add_put("/admin/cohorts/{id}/members", _view(_upload_members))
    p("/admin/cohorts/{id}/syncs", _view(_cohort_sync, 202))
    g("/admin/memberships", _view(_memberships))
    g("/admin/profiles/{project}/{user_id}", _view(_profile))
