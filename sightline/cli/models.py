"""`sightline models list|show|promote`: the model registry."""

from __future__ import annotations

import json

import click

from sightline.cli import get_settings


@click.group()
def cli() -> None:
    """List, inspect and promote registered ranking models (settings.registry_dir)."""


@cli.command("list")
@click.pass_context
def list_(ctx: click.Context) -> None:
    """All versions, newest first, with aliases and test AUC."""
    from rich.console import Console
    from rich.table import Table

    from models import Registry

    reg = Registry(get_settings(ctx))
    by_version: dict[str, list[str]] = {}
    for alias, version in reg.aliases().items():
        by_version.setdefault(version, []).append(alias)
    table = Table(title=f"models in {reg.root}")
    for col in ("version", "kind", "aliases", "auc", "logloss", "calibration", "created"):
        table.add_column(col)
    for rec in reg.list():
        m = rec.meta.get("metrics", {})
        fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "-"  # noqa: E731
        table.add_row(rec.version, rec.kind, ",".join(by_version.get(rec.version, [])), fmt(m.get("auc")),
                      fmt(m.get("logloss")), fmt(m.get("calibration")), rec.meta.get("created_at", "")[:19])
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


@cli.command()
@click.argument("version_or_alias")
@click.pass_context
def show(ctx: click.Context, version_or_alias: str) -> None:
    """Metadata of one version (or alias) as JSON: features, config, data window, metrics, code version."""
    from models import ModelNotFound, Registry

    try:
        rec = Registry(get_settings(ctx)).get(version_or_alias)
    except ModelNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({**rec.meta, "path": str(rec.path)}, indent=1))


@cli.command()
@click.argument("version_or_alias")
@click.option("--alias", type=click.Choice(["production", "candidate"]), default="production", show_default=True)
@click.pass_context
def promote(ctx: click.Context, version_or_alias: str, alias: str) -> None:
    """Point an alias (default production) at a version; serving picks it up on reload."""
    from models import ModelNotFound, Registry

    try:
        rec = Registry(get_settings(ctx)).promote(version_or_alias, alias)
    except ModelNotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{alias} -> {rec.version}")
