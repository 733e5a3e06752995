"""The OpenAPI 3 description of the admin API (served at /admin/openapi.json)."""

from __future__ import annotations

from typing import Any

_ERROR = {"description": "Why not, and what to do",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_OBJ = {"content": {"application/json": {"schema": {"type": "object"}}}}
_LIMITED = {"description": "This address failed to authenticate too often (admin.max_failed_auth per "
                           "admin.failed_auth_window_s): wait the Retry-After seconds; the token is not looked at.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _op(summary: str, description: str, *, params: list[dict] | None = None, body: dict | None = None,
        ok: str = "200", errors: tuple[str, ...] = ("401",)) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "description": description,
                          "responses": {ok: {"description": "OK", **_OBJ}, **{e: _ERROR for e in errors},
                                        "429": _LIMITED}}
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return op


NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "A destination's name."}
JOB = {"name": "job", "in": "path", "required": True, "schema": {"type": "string"}, "description": "A backfill id."}
HOURS = {"name": "hours", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 8784},
         "description": "How many of the latest hours; anything else is answered 400 naming the parameter."}
TEXT = {"type": "string", "maxLength": 1024}
COHORT = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "description": "A cohort's id."}
EXPORTS = {"type": "object", "properties": {"exports": {"type": "string", "enum": ["all", "events", "merged_ids"]}}}
SYNC_NOW = {"type": "object", "required": ["request", "cohort", "destination", "syncs", "runs_on",
                                           "waiting_for_worker", "note"], "properties": {
    "request": {"type": "string", "description": "The request's id (sr-<time>-<hex>)."},
    "cohort": {"type": "string"},
    "destination": {"type": "string", "nullable": True, "description": "The one asked for; null: all."},
    "syncs": {"type": "array", "items": {"type": "object", "properties": {
        "destination": {"type": "string"}, "routing_key": {"type": "string"},
        "cadence": {"type": "string", "enum": ["hourly", "daily", "once"]},
        "state": {"type": "string", "enum": ["queued", "complete"]},
        "scheduled_ms": {"type": "integer", "nullable": True},
        "latest_completed_ms": {"type": "integer", "nullable": True}}}},
    "runs_on": {"type": "string", "nullable": True, "description": "The worker seen holding the sync duty."},
    "waiting_for_worker": {"type": "boolean", "description": "No worker running the cohorts stage was seen: the "
                           "request waits on the topic for one."},
    "note": {"type": "string"}}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "stream admin API", "version": "1",
             "description": "Status, history, backfills, runtime enable/disable, access verification, policies and "
                            "dead letters of a stream deployment. Every path needs `Authorization: Bearer "
                            "<admin.token>` (docs/operations.md, Access); docs/admin.md has the operator's guide."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Error": {"type": "object", "required": ["error"],
                              "properties": {"error": {"type": "string"}}}}},
    "security": [{"bearer": []}],
    "paths": {
        "/admin/status": {"get": _op(
            "Export status", "Per exporter: state, sealed hours, partitions, last error, data lost, latest hours.",
            params=[HOURS], errors=("400", "401"))},
        "/admin/health": {"get": _op(
            "Health of this worker", "The readiness of this worker's parts, and why each failed part failed (the "
            "error text, with the configured secrets replaced by [redacted]); /healthz and /readyz name the parts "
            "only.")},
        "/admin/destinations": {"get": _op("Destinations", "The destinations, their settings and state.")},
        "/admin/destinations/{name}/history": {"get": _op(
            "Export history", "Per hour, every export job (live, backfills): status, counts, timing, failures.",
            params=[NAME, HOURS], errors=("400", "401", "404"))},
        "/admin/destinations/{name}/enable": {"post": _op(
            "Turn exports on", "At runtime, no restart; resumes from the destination's own offsets, and reports "
            "offsets lost if the pause outlived the retention.", params=[NAME], body=EXPORTS,
            errors=("400", "401", "404", "409"))},
        "/admin/destinations/{name}/disable": {"post": _op(
            "Turn exports off", "At runtime: each exporter finishes its cycle and leaves its consumer group.",
            params=[NAME], body=EXPORTS, errors=("400", "401", "404"))},
        "/admin/destinations/{name}/verify": {"post": _op(
            "Verify access", "Puts under each prefix the layout writes, a multipart put for SSE-KMS, the region; "
            "each failure with the missing permission and the statement that grants it.", params=[NAME],
            errors=("401", "404"))},
        "/admin/destinations/{name}/policy": {"get": _op(
            "Policies", "Bucket policy, role policy, KMS key policy statement and trust policy, ready to paste.",
            params=[NAME, {"name": "enforce_encryption", "in": "query", "schema": {"type": "boolean"},
                           "description": "true or false (1 or 0); default false."}],
            errors=("400", "401", "404"))},
        "/admin/backfills": {
            "get": _op("Backfills", "Every backfill the ledger knows, latest first, with its progress.",
                       params=[{"name": "destination", "in": "query", "schema": TEXT}], errors=("400", "401")),
            "post": _op("Start a backfill", "Rebuild a destination's hours [from, to) in this worker; answers with "
                        "its first progress document.", ok="202", errors=("400", "401", "404", "409"), body={
                            "type": "object", "required": ["destination", "from", "to"], "properties": {
                                "destination": {"type": "string"}, "from": {"type": "string", "example":
                                                                            "2024-03-01T00"},
                                "to": {"type": "string", "example": "2024-03-08T00"},
                                "exports": {"type": "string", "enum": ["all", "events", "merged_ids"]},
                                "source": {"type": "string", "enum": ["auto", "accepted", "archive"]}}})},
        "/admin/backfills/{job}": {
            "get": _op("A backfill's progress", "Hours done of total, events, rate, ETA, state.", params=[JOB],
                       errors=("401", "404")),
            "delete": _op("Cancel a backfill", "It stops after the hours it is rebuilding, wherever it runs.",
                          params=[JOB], errors=("401", "404", "409"))},
        "/admin/imports": {"get": _op(
            "Import status", "Per S3 import source: files discovered, waiting, done and failed (with reasons and the "
            "latest failures), rows read, imported and dead-lettered, and the age of the oldest waiting file; a mirror "
            "source of events also has mirror_files: per file, its mutations by type, their outcomes and each hour "
            "they rewrote with when (docs/imports.md).")},
        "/admin/imports/{name}/preview": {"get": _op(
            "Import preview", "The first rows of a file of the source next to the events they convert to and each "
            "row's errors; imports nothing.", params=[NAME, {"name": "key", "in": "query", "schema": TEXT}, {
                "name": "rows", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
            errors=("400", "401", "404", "422"))},
        "/admin/imports/{name}/history": {"get": _op(
            "Mirror files of a source", "Every mirror file of a mirror source of events (the import status shows the "
            "20 applied last), latest applied first, a page at a time: total (the source's files), files (each as in "
            "the import status: key, modified_ms, mutations by type, outcomes, hours rewritten with rewritten_ms, "
            "last_applied_ms) and next, the cursor of the page's last file when more follow (pass it as before), "
            "else null (docs/imports.md). 400 for another kind of source, a limit out of range or a before that is "
            "not a cursor; 404 for no such source.", params=[{**NAME, "description": "An import source's name."}, {
                "name": "limit", "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                "description": "The most files of the page."}, {
                "name": "before", "in": "query", "schema": TEXT,
                "description": "The next cursor of the previous page; absent: from the file applied last."}],
            errors=("400", "401", "404"))},
        "/admin/imports/{name}/retry": {"post": _op(
            "Import files again", "Queue keys of the source for import again, even if they were done or failed.",
            params=[NAME], errors=("400", "401", "404"), body={
                "type": "object", "required": ["keys"], "properties": {
                    "keys": {"type": "array", "items": {"type": "string"}, "minItems": 1}}})},
        "/admin/cohorts": {"get": _op(
            "Cohorts", "Every cohort's definition, whether it is static, and the cohort destinations it is synced to "
            "(destination, bucket, routing key, cadence, time zone, property columns).")},
        "/admin/cohorts/{id}": {"get": _op(
            "A cohort", "Its definition and syncs; its history, oldest first: each completed sync (state complete: "
            "members, entering, exiting, the previous sync it was diffed against, its bucket and the keys of its "
            "three files) and each failed attempt (state failed: reason, error); its member counts per sync "
            "(counts: one point per completed sync); for a static cohort, its uploaded list (uploaded: members, "
            "uploaded_at_ms, by; null before any upload); its sync now requests not run yet (requested: request, at_ms, "
            "by, destination, syncs). Read from the sync records in the buckets and the sync requests topic.",
            params=[COHORT], errors=("401", "404"))},
        "/admin/cohorts/{id}/file": {"get": {**_op(
            "A file of a cohort's sync", "The CSV file at key, read from the destination's bucket, when key is a "
            "file of a completed sync of the cohort (its history lists them); any other key is a 404.",
            params=[COHORT, {"name": "key", "in": "query", "required": True, "schema": TEXT}],
            errors=("400", "401", "404")), "responses": {
                "200": {"description": "The file", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **{e: _ERROR for e in ("400", "401", "404")}, "429": _LIMITED}}},
        "/admin/cohorts/{id}/members": {"put": {**_op(
            "Upload a static cohort's members", "Replaces the list of user ids of a cohort defined with static: true, "
            "kept in each bucket it is synced to (<records_prefix><destination>/static/<project>_<cohort>.json); "
            "its next syncs list the users of its project with one of these user_ids (docs/cohorts.md). 409 for a "
            "cohort with a rule or synced nowhere; 502 when a bucket refused the list.", params=[COHORT],
            errors=("400", "401", "404", "409", "502")), "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"type": "object", "required": ["user_ids"], "properties": {
                    "user_ids": {"type": "array", "items": {"type": "string", "minLength": 1,
                                                            "maxLength": 1024}}}}},
                "text/plain": {"schema": {"type": "string", "description": "One user id per line."}}}}}},
        "/admin/memberships": {"get": _op(
            "A user's cohorts", "The cohorts a user is in (by user_id or amplitude_id, one of them; of one project "
            "if given): per sync, the user's row in the existing file of its latest completed sync (memberships), "
            "and every sync looked at with the time of that sync (checked; null before any). Reads each of those "
            "files whole.", params=[
                {"name": "user_id", "in": "query", "schema": TEXT},
                {"name": "amplitude_id", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "project", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                             "maximum": 4294967295}}],
            errors=("400", "401"))},
        "/admin/cohorts/{id}/syncs": {"post": {**_op(
            "Sync a cohort now", "Any worker takes it: the request is recorded on the sync requests topic "
            "(topics.cohort_sync_requests) and the worker holding the sync duty runs the cohort's syncs (to one "
            "destination, if the body names it) at its next look, in turn with its other syncs and without waiting "
            "out a failed attempt's backoff, once (a request more than 24 hours old when a worker holding the duty "
            "reads it is dropped). The answer has the request's id and, per sync, queued (scheduled_ms: the time of "
            "the sync that runs it, if it runs in its turn) or complete (the current hour or day of an hourly or "
            "daily sync is complete already), from its latest completed sync; runs_on names the worker holding the "
            "duty when one was seen; waiting_for_worker is true when none was (no worker runs the cohorts stage): the "
            "request waits for one. A once sync runs the request in a sync stamped at or after it, so that it counts "
            "every event accepted before the request: the request's minute rounded up (at the earliest the minute "
            "after its latest completed or pending sync), diffed against the latest completed sync; an hourly or "
            "daily sync runs its current time's sync, stamped before the request. GET "
            "/admin/cohorts/{id} lists the requests not run yet (docs/cohorts.md). 502 when a sync's records "
            "cannot be read from its bucket: nothing is queued.",
            params=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "A cohort's id."}], ok="202", errors=("400", "401", "404", "502"),
            body={"type": "object", "properties": {"destination": {"type": "string"}}}), "responses": {
                "202": {"description": "Queued", "content": {"application/json": {"schema": SYNC_NOW}}},
                **{e: _ERROR for e in ("400", "401", "404", "502")}, "429": _LIMITED}}},
        "/admin/profiles/{project}/{user_id}": {"get": _op(
            "A user's profile", "The user's current properties as the rows of the project's sources of profiles "
            "set them (user_properties), when they last changed (updated_ms) and the file and row that set them; "
            "404 for a project without a source of profiles, a user without a profile and a deleted one. Read from "
            "the profiles table's changelog: a lookup reads one of its partitions up to its end as the lookup starts "
            "(docs/admin.md); 503 when the broker fetches nothing of it for 20 s.",
            params=[{"name": "project", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 4294967295},
                     "description": "A project id."},
                    {"name": "user_id", "in": "path", "required": True, "schema": TEXT,
                     "description": "The user's user_id (URL-encoded; one with a '/' is looked up in the console)."}],
            errors=("400", "401", "404", "503"))},
        "/admin/deadletters": {"get": _op(
            "Dead letters", "Counts by reason and by hour, and the latest samples with their source coordinates "
            "(credentials redacted).", params=[HOURS, {"name": "samples", "in": "query", "schema": {
                "type": "integer", "minimum": 0, "maximum": 500, "default": 20}}], errors=("400", "401"))},
    },
}
