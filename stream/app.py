"""The faust application of a worker: the dedupe agent, plus the ingest and export loops as app tasks."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import faust
from faust.worker import Worker

from stream.agents import dedupe
from stream.agents.export import run_export
from stream.agents.ingest import run_ingest
from stream.clock import Clock, SystemClock
from stream.consumer import App as StreamApp
from stream.crashpoints import crash_point
from stream.export.control import Control, ControlTail
from stream.export.exporter import Exporter, export_input
from stream.export.status import export_status
from stream.health import HEALTH
from stream.kafka import apply_compression_level, client_args
from stream.retry import supervise
from stream.settings import Settings
from stream.shutdown import SHUTDOWN

log = logging.getLogger(__name__)


def faust_settings(settings: Settings) -> dict:
    k, w = settings.kafka, settings.worker
    conf = dict(
        broker=[f"kafka://{h.strip()}" for h in k.bootstrap_servers.split(",")],
        store="rocksdb://",
        datadir=str(Path(w.data_dir) / "faust"),
        web_enabled=w.web_enabled,
        web_port=w.web_port,
        broker_session_timeout=k.session_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        topic_partitions=settings.topics.partitions,
        topic_replication_factor=settings.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_max_request_size=k.max_request_bytes,
        producer_acks=-1,
        producer_compression_type=None if k.compression_type == "none" else k.compression_type,
        consumer_max_fetch_size=max(k.max_request_bytes, 1 << 20),
        stream_buffer_maxsize=k.prefetch_messages,   # faust's default, 4096 messages, is gigabytes of batches
        table_standby_replicas=0,
    )
    if k.sasl_mechanism:
        conf["broker_credentials"] = faust.SASLCredentials(username=k.sasl_username, password=k.sasl_password,
                                                           mechanism=k.sasl_mechanism)
    return conf


def effective_stages(settings: Settings) -> set[str]:
    """The stages of ``worker.stages`` the worker runs: a stage with nothing to do is not run, so that readiness
    waits only for the stages that work."""
    stages = set(settings.worker.stages)
    if not settings.sources:
        stages.discard("import")     # nothing to import: no agent, no table, no discovery
    if not settings.destinations:
        stages.discard("export")     # no destination: no exporter, no control tail
    if not any(d.syncs for d in settings.cohort_destinations):
        stages.discard("cohorts")    # no cohort sync to schedule
    if not settings.mirror_projects():
        stages.discard("mirror")     # no mirror source: no index, no mutations to apply
    if not settings.profiles_projects():
        stages.discard("profiles")   # no source of profiles: no profiles table
    return stages


def build_app(settings: Settings, clock: Clock | None = None) -> faust.App:
    clock = clock or SystemClock()
    (Path(settings.worker.data_dir) / "faust").mkdir(parents=True, exist_ok=True)
    stages = effective_stages(settings)
    # faust's own consumer group serves the dedupe agent; a worker without it gets a group of its own so
    # that it never takes part in the dedupe group's partition assignment
    app_id = settings.worker.app_id if "dedupe" in stages else f"{settings.worker.app_id}-{'-'.join(sorted(stages))}"
    apply_compression_level(settings.kafka)    # faust's producers and the changelog batches built by hand
    app = StreamApp(app_id, **faust_settings(settings))
    app.kafka_client_args = client_args(settings.kafka)
    HEALTH.expect(*stages)
    running: dict[str, Exporter] = {}    # this process's exporters by name, while they run (the status view)
    control = Control()                    # the exports turned off at runtime (stream.export.control)
    if "dedupe" in stages:
        dedupe.register(app, settings)

        @app.on_rebalance_complete.connect
        async def _dedupe_ready(sender, **kwargs) -> None:
            HEALTH.mark_ready("dedupe")

    if settings.worker.http_port:
        from stream.web import serve, worker_app

        @app.task
        async def http() -> None:
            status = (lambda hours: export_status(settings, {n: e.book for n, e in running.items()}, hours,
                                                  paused=control.paused)) if "export" in stages else None
            from stream.admin import sessions
            from stream.admin.auth import Access
            from stream.admin.console import SESSION_S
            from stream.admin.service import Admin
            admin = Admin(settings, clock, control if "export" in stages else None)
            access = Access.of(settings, clock)
            revoked = sessions.Revoked(SESSION_S * 1000, ready=False)   # until the topic has been read
            runner = await serve(worker_app(HEALTH, status, access.token, admin, access, revoked,
                                            lambda rec: sessions.publish(settings, rec)),
                                 settings.worker.http_host, settings.worker.http_port)

            async def follow() -> None:
                tail = sessions.RevokedTail(settings, revoked, clock.now_ms)
                await tail.start()
                await tail.run(stop=lambda: SHUTDOWN.requested)
            try:
                if access.token is not None:     # the console is served: follow the sessions logged out anywhere
                    await supervise("console sessions", follow, stop=lambda: SHUTDOWN.requested)
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()

    if "import" in stages:
        from stream.agents import imports
        imports.register(app, settings, clock)

    if "mirror" in stages:
        from stream.agents import mirror
        mirror.register_stage(app, settings, clock)

        @app.on_rebalance_complete.connect
        async def _mirror_ready(sender, **kwargs) -> None:
            HEALTH.mark_ready("mirror")

    if "profiles" in stages:
        from stream.agents import profiles
        profiles.register(app, settings, clock)

        @app.on_rebalance_complete.connect
        async def _profiles_ready(sender, **kwargs) -> None:
            HEALTH.mark_ready("profiles")

    if "ingest" in stages:
        @app.task
        async def ingest() -> None:
            await _supervised("ingest", "ingest", lambda: run_ingest(settings, clock))

    if "export" in stages:
        control_ready = asyncio.Event()

        @app.task
        async def export_control() -> None:
            async def follow() -> None:
                tail = ControlTail(settings, control)
                await tail.start()
                control_ready.set()
                await tail.run(stop=lambda: SHUTDOWN.requested)
            await _supervised("export control", "export", follow)

        for dest in settings.destinations:
            if dest.enabled and dest.exports_events():
                app.task(_export_task(settings, dest, clock, "accepted", running, control, control_ready))
            if dest.enabled and dest.exports_merged_ids():
                app.task(_export_task(settings, dest, clock, "identity_merges", running, control, control_ready))
        if not any(d.enabled and (d.exports_events() or d.exports_merged_ids()) for d in settings.destinations):
            HEALTH.mark_ready("export")   # every destination is disabled in the settings: no exporter to wait for

    if "cohorts" in stages:
        from stream.agents import cohorts as cohort_agents
        from stream.cohorts.duty import DUTY, after_revocation, holds_duty
        cohort_agents.register(app, settings, clock)
        cohorts_topic = settings.topics.name("cohorts")

        # the syncs run on the worker assigned partition 0 of the cohorts topic (stream.cohorts.duty)
        @app.on_partitions_revoked.connect
        async def _cohort_sync_duty_revoked(sender, revoked, **kwargs) -> None:
            DUTY.set(after_revocation(DUTY.held, revoked, cohorts_topic))

        @app.on_partitions_assigned.connect
        async def _cohort_sync_duty_assigned(sender, assigned, **kwargs) -> None:
            DUTY.set(holds_duty(app.assignor.assigned_actives(), cohorts_topic))

        @app.task
        async def cohorts() -> None:
            from stream.cohorts.schedule import run_stage
            await _supervised("cohorts", "cohorts", lambda: run_stage(
                settings, clock, stop=lambda: SHUTDOWN.requested, on_ready=lambda: HEALTH.mark_ready("cohorts"),
                duty=DUTY))
    return app


def _export_task(settings, dest, clock, topic, running, control, control_ready):
    suffix = "" if topic == "accepted" else "_merged_ids"
    name = export_input(settings, dest, topic).name

    async def export() -> None:
        await control_ready.wait()
        while not SHUTDOWN.requested:
            if control.is_paused(name):       # turned off at runtime: wait until it is turned on again
                await control.wait_change(5)
                continue
            log.info("export %s: exporting (turned on)", name)
            await _supervised(f"export {dest.name}{suffix}", "export",
                              lambda: run_export(settings, dest, clock, topic, running,
                                                 stop=lambda: SHUTDOWN.requested or control.is_paused(name)))
            if control.is_paused(name):
                log.info("export %s: turned off at runtime; finished its cycle and left its consumer group", name)
    export.__name__ = export.__qualname__ = f"export_{dest.name.replace('-', '_')}{suffix}"
    return export


FAILURES_BEFORE_UNHEALTHY = 5
"""A stage that failed this many times in a row fails the liveness check, so that Kubernetes restarts the pod."""


async def _supervised(name: str, part: str, run) -> None:
    def failed(exc: BaseException, failures: int) -> None:
        HEALTH.mark_not_ready(part)
        if failures >= FAILURES_BEFORE_UNHEALTHY:
            HEALTH.mark_failed(part, f"{name} failed {failures} times in a row, last: {type(exc).__name__}: {exc}")

    async def once() -> None:
        with SHUTDOWN.running(name):
            await run()

    await supervise(name, once, stop=lambda: SHUTDOWN.requested, on_error=failed)


class StreamWorker(Worker):
    """faust's worker, whose stop first lets the stage loops finish their cycle (``stream.shutdown``)."""

    def __init__(self, app: faust.App, settings: Settings, **kwargs):
        super().__init__(app, **kwargs)
        self.stream_settings = settings

    async def on_stop(self) -> None:
        crash_point("worker.stopping")
        timeout = self.stream_settings.worker.shutdown_timeout_s
        log.info("stopping: finishing the uploads in flight and committing (at most %.0fs)", timeout)
        SHUTDOWN.request()
        left = await SHUTDOWN.wait(timeout)
        if left:
            log.warning("stopping: %s still running after %.0fs (worker.shutdown_timeout_s); abandoned, a restart "
                        "replays it exactly once", ", ".join(left), timeout)
        else:
            log.info("stopping: every loop finished and committed")
        await super().on_stop()
