"""`atomize serve` / `python -m service`: run the service with uvicorn.

Every setting is a flag with the name of its environment variable (`--max-wait-ms` <->
`ATOM_MAX_WAIT_MS`); a flag left out falls back to the environment, then to the default.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from .config import Settings

log = logging.getLogger("service")


def _flag(name: str) -> Any:
    """A typer option documented from the Settings field of the same name (one source of truth)."""
    field = Settings.model_fields[name]
    default = field.default.get_secret_value() if hasattr(field.default, "get_secret_value") else field.default
    return typer.Option(help=f"{field.description} (env ATOM_{name.upper()}, default {default})", show_default=False)


def serve(
    bundle: Annotated[Optional[list[str]], _flag("bundle")] = None,
    bank: Annotated[Optional[list[str]], _flag("bank")] = None,
    bank_search: Annotated[Optional[str], _flag("bank_search")] = None,
    bundle_digest: Annotated[Optional[list[str]], _flag("bundle_digest")] = None,
    host: Annotated[Optional[str], _flag("host")] = None,
    port: Annotated[Optional[int], _flag("port")] = None,
    max_batch_items: Annotated[Optional[int], _flag("max_batch_items")] = None,
    max_batch_components: Annotated[Optional[int], _flag("max_batch_components")] = None,
    max_batch_padding: Annotated[Optional[float], _flag("max_batch_padding")] = None,
    max_round_items: Annotated[Optional[int], _flag("max_round_items")] = None,
    max_wait_ms: Annotated[Optional[float], _flag("max_wait_ms")] = None,
    max_queue_items: Annotated[Optional[int], _flag("max_queue_items")] = None,
    max_concurrent_requests: Annotated[Optional[int], _flag("max_concurrent_requests")] = None,
    inference_threads: Annotated[Optional[list[str]], _flag("inference_threads")] = None,
    inference_workers: Annotated[Optional[int], _flag("inference_workers")] = None,
    prepare_threads: Annotated[Optional[int], _flag("prepare_threads")] = None,
    switch_interval_ms: Annotated[Optional[float], _flag("switch_interval_ms")] = None,
    direct_routes: Annotated[Optional[bool], _flag("direct_routes")] = None,
    inference_nice: Annotated[Optional[list[str]], _flag("inference_nice")] = None,
    max_inputs_per_request: Annotated[Optional[int], _flag("max_inputs_per_request")] = None,
    max_components_per_input: Annotated[Optional[int], _flag("max_components_per_input")] = None,
    max_neighbors: Annotated[Optional[int], _flag("max_neighbors")] = None,
    max_chunks_per_input: Annotated[Optional[int], _flag("max_chunks_per_input")] = None,
    chunk_overlap: Annotated[Optional[int], _flag("chunk_overlap")] = None,
    max_request_bytes: Annotated[Optional[int], _flag("max_request_bytes")] = None,
    request_timeout_ms: Annotated[Optional[float], _flag("request_timeout_ms")] = None,
    max_connections: Annotated[Optional[int], _flag("max_connections")] = None,
    read_timeout_ms: Annotated[Optional[float], _flag("read_timeout_ms")] = None,
    drain_ms: Annotated[Optional[float], _flag("drain_ms")] = None,
    metrics_port: Annotated[Optional[int], _flag("metrics_port")] = None,
    http: Annotated[Optional[str], _flag("http")] = None,
    loop: Annotated[Optional[str], _flag("loop")] = None,
    device: Annotated[Optional[str], _flag("device")] = None,
    precision: Annotated[Optional[str], _flag("precision")] = None,
    api_key: Annotated[Optional[str], _flag("api_key")] = None,
    otlp_endpoint: Annotated[Optional[str], _flag("otlp_endpoint")] = None,
    otlp_sample_ratio: Annotated[Optional[float], _flag("otlp_sample_ratio")] = None,
    log_level: Annotated[Optional[str], _flag("log_level")] = None,
) -> None:
    """Serve a model bundle over HTTP: /v1/atomize, /v1/embeddings (OpenAI), /metrics."""
    # Only the flags given on the command line: the rest come from ATOM_* or the defaults.
    given = {name: value for name, value in locals().items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        typer.echo(f"invalid setting {where}: {first['msg']}" if where else f"invalid settings: {first['msg']}", err=True)
        raise typer.Exit(2) from None
    run(settings)


def run(settings: Settings) -> None:
    try:  # the serving extra; the CLI itself imports without it
        import uvicorn

        from .app import create_app
        from .server import DrainingServer, guarded_protocol
    except ImportError as exc:
        typer.echo(f"serving needs the `serve` extra (pip install 'atomizer[serve]'): {exc}", err=True)
        raise typer.Exit(1) from None
    from contract.bank import BankError
    from contract.bundle import BundleError

    from .served import ServeSetupError, load_served
    from .tracing import TracingUnavailable

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Validated before uvicorn starts, so a bad bundle is one line, not a traceback.
        loaded = load_served(settings)
    except (BundleError, BankError, ServeSetupError) as exc:
        log.error("cannot start: %s", exc)
        raise typer.Exit(1) from None
    try:
        app = create_app(settings, loaded=loaded)
    except TracingUnavailable as exc:
        log.error("cannot start: %s", exc)
        raise typer.Exit(1) from None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=guarded_protocol(settings.max_connections, settings.read_timeout_s, settings.http),
        loop=settings.loop,
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
    )
    state = app.state.atom
    server = DrainingServer(config, drain_s=settings.drain_s, on_drain=lambda: setattr(state, "draining", True),
                            on_close=lambda: setattr(state, "closing", True))
    server.run()


def main(argv: list[str] | None = None) -> int:
    cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    cli.command()(serve)
    try:
        code = typer.main.get_command(cli).main(args=argv, prog_name="python -m service", standalone_mode=False)
    except typer.Abort:
        return 1
    except Exception as exc:  # click usage errors know how to print themselves
        if not hasattr(exc, "show"):
            raise
        exc.show()
        return getattr(exc, "exit_code", 2)
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
