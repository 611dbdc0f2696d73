"""`sightline serve`: run the gRPC server; `sightline serve keys ...`: manage API keys."""

from __future__ import annotations

import signal
import threading
import time

import click

from sightline.cli import get_settings


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Interface to bind (default: serving.host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: serving.port, 50051; 0 = any free port).")
@click.option("--no-auth", is_flag=True, help="Accept calls without an API key (development only).")
@click.option("--processes", type=click.IntRange(1, 64), default=None,
              help="Server processes sharing the port (default: serving.processes, 1). More than one needs a "
                   "shared frequency store (serving.frequency_store sqlite, the local default, or redis).")
@click.option("--runtime", type=click.Choice(["asyncio", "threads"]), default=None,
              help="asyncio (default: serving.runtime): one event-loop thread per process runs Recommend "
                   "to completion, one call at a time; threads: grpc's thread-pool server (serving.workers).")
@click.pass_context
def cli(ctx: click.Context, host: str | None, port: int | None, no_auth: bool, processes: int | None,
        runtime: str | None) -> None:
    """Run the gRPC recommendation and admin server until Ctrl-C / SIGTERM.

    Serves RecommendationService (Recommend, ReportFeedback), the admin services other
    packages register (campaigns, experiments, privacy), gRPC health and reflection.
    Callers send an API key in the `x-api-key` metadata; create one with
    `sightline serve keys create --owner my-app --scope recommend --scope feedback`.
    With --processes N, N processes share the port (the kernel spreads connections); they
    pace every budget together through the campaign store and share one rate-limit bucket
    per API key.
    """
    if ctx.invoked_subcommand is not None:
        return
    from serving import build_server
    from serving.errors import ServingError
    from serving import app_services

    settings = get_settings(ctx)
    if no_auth:
        settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"require_api_key": False})})
    if processes is not None:   # ServerGroup.start refuses in-process ('memory') caps with more than one
        settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"processes": processes})})
    if runtime is not None:
        settings = settings.model_copy(update={"serving": settings.serving.model_copy(update={"runtime": runtime})})
    if settings.serving.processes > 1:
        _serve_group(settings, host, port)
        return
    began = time.monotonic()
    try:
        server = build_server(settings, app_services(settings), host=host, port=port)
    except ServingError as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server.start()
    except ServingError as exc:
        server.stop(0)
        raise click.ClickException(str(exc)) from None
    click.echo(f"serving on {server.address} after {time.monotonic() - began:.1f} s of start-up "
               f"({'TLS' if server.tls else 'plaintext'}, "
               f"{settings.serving.runtime} runtime; API-key limits in {settings.rate_limit_store_kind}; "
               f"services: {', '.join(s.name for s in server.services)}); Ctrl-C stops", err=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        click.echo("stopping: finishing in-flight calls and flushing event logs ...", err=True)
        server.stop(grace=5.0)


def _serve_group(settings, host: str | None, port: int | None) -> None:
    from serving import ServerGroup
    from serving.errors import ServingError

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    n = settings.serving.processes
    click.echo(f"starting {n} server processes ...", err=True)
    group = ServerGroup(settings, host=host, port=port)
    began = time.monotonic()
    try:
        group.start()
    except ServingError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"serving on {group.address} with {n} processes after {time.monotonic() - began:.1f} s of start-up "
               f"(pids {', '.join(map(str, group.pids))}; "
               f"{settings.serving.runtime} runtime; "
               f"frequency caps in {settings.frequency_store_kind}, API-key limits in {group.rate_limit_store}, "
               "budgets paced together through the campaign store); Ctrl-C stops", err=True)
    failed: list = []
    try:
        while not stop.wait(0.5):
            failed = group.failed()
            if failed:
                break
    finally:
        click.echo("stopping: finishing in-flight calls and flushing event logs ...", err=True)
        group.stop(grace=5.0)
    if failed:
        raise click.ClickException(f"server process(es) exited unexpectedly (index, exit code): {failed}; "
                                   "the others were stopped — see the log above, then start again")


@cli.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed in the campaign database)."""


def _store(ctx: click.Context):
    from serving import ApiKeyStore

    return ApiKeyStore.from_settings(get_settings(ctx))


@keys.command("create")
@click.option("--owner", required=True, help="The app, marketer or analyst the key is for.")
@click.option("--scope", "scopes", multiple=True, required=True,
              type=click.Choice(["recommend", "feedback", "admin:campaigns", "admin:experiments", "admin:privacy"]),
              help="A scope the key grants (repeat for several).")
@click.option("--rate", type=float, default=None, help="Own request rate per second (default: serving.rate_limit_rps).")
@click.option("--burst", type=int, default=None, help="Own burst size (default: serving.rate_limit_burst).")
@click.pass_context
def create(ctx: click.Context, owner: str, scopes: tuple[str, ...], rate: float | None, burst: int | None) -> None:
    """Create a key and print it once (it is stored only as a hash)."""
    from serving import key_id_of
    from serving.errors import ServingError

    store = _store(ctx)
    try:
        plaintext = store.create_key(owner, scopes, rate_per_s=rate, burst=burst)
    except ServingError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"key id {key_id_of(plaintext)} for {owner} ({', '.join(scopes)}); shown once, store it now:", err=True)
    click.echo(plaintext)


@keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.pass_context
def list_(ctx: click.Context, include_revoked: bool) -> None:
    """List keys (ids, owners, scopes; never secrets)."""
    store = _store(ctx)
    try:
        rows = store.list_keys(include_revoked=include_revoked)
    finally:
        store.close()
    if not rows:
        click.echo("no keys; create one with 'sightline serve keys create'")
    for k in rows:
        state = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
        limit = f" rate={k.rate_per_s}/s burst={k.burst}" if k.rate_per_s or k.burst else ""
        click.echo(f"{k.key_id}  {k.owner:<24} {' '.join(sorted(k.scopes)):<40} {state}{limit}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by id (other servers stop accepting it within serving.api_key_cache_s)."""
    from serving.errors import ServingError

    store = _store(ctx)
    try:
        store.revoke(key_id)
    except ServingError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"revoked {key_id}")
