"""The ``stream api`` command: serve the HTTP ingestion API until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import click

from stream.errors import ConfigError
from stream.settings import Settings, load_settings

log = logging.getLogger("stream.api")


@click.command()
@click.option("--config", "-c", type=click.Path(dir_okay=False), envvar="STREAM_CONFIG",
              help="YAML configuration file (examples/stream.yaml); STREAM_* environment variables override it.")
@click.option("--host", default=None, help="Address to listen on (api.host).")
@click.option("--port", type=int, default=None, help="Port to listen on (api.port).")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Serving processes sharing the port (SO_REUSEPORT), one per core to use; this process then "
              "supervises them (stream.api.processes).")
@click.option("--reuse-port", is_flag=True, hidden=True, help="Listen with SO_REUSEPORT (a process of a group).")
def api(config: str | None, host: str | None, port: int | None, processes: int, reuse_port: bool) -> None:
    """Serve the HTTP ingestion API (Amplitude /2/httpapi, /batch; Segment /v1/*) until SIGINT/SIGTERM."""
    try:
        settings = load_settings(config)
        if host is not None or port is not None:
            a = settings.api.model_dump()
            a.update({k: v for k, v in (("host", host), ("port", port)) if v is not None})
            settings = load_settings(config, api=a)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=settings.worker.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stream.redact import install_log_filter
    install_log_filter(settings)
    from stream.kafka import apply_compression_level
    try:
        apply_compression_level(settings.kafka)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    from stream.web import port_free
    if not reuse_port and (why := port_free(settings.api.host, settings.api.port)) is not None:
        raise click.ClickException(f"cannot serve HTTP on {settings.api.host}:{settings.api.port}: {why} "
                                   "(api.host, api.port, --host, --port)")
    if processes > 1:
        from stream.api.processes import child_command, supervise
        cmd = child_command(config, settings.api.host, settings.api.port)
        raise SystemExit(supervise([cmd] * processes))
    asyncio.run(_serve(settings, reuse_port))


async def _serve(settings: Settings, reuse_port: bool = False) -> None:
    from stream.api.app import serve
    from stream.api.service import Ingestor
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await serve(Ingestor(settings), settings.api.host, settings.api.port, reuse_port=reuse_port)
    import gc
    gc.collect()
    gc.freeze()

    log.info("stream api listening on http://%s:%d", settings.api.host, settings.api.port)
    await stop.wait()
    log.info("stopping: finishing the requests in flight")
    await runner.cleanup()
