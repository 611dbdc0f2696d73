"""`sightline privacy ...`: erase a user, purge expired data, render the consent table."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sightline.cli import get_settings


@click.group()
def cli() -> None:
    """Erase a user, purge data past retention, show the consent decision table.

    API keys (including admin:privacy ones for the PrivacyAdminService) are managed
    with `sightline serve keys`. SECURITY.md and docs/privacy.md describe the model.
    """


@cli.command()
@click.option("--user", "user_id", required=True, help="The user id as the app sends it (hashed here).")
@click.option("--pseudonymous", is_flag=True, help="USER is already the stored pseudonym (e.g. from a log).")
@click.option("--json", "as_json", is_flag=True, help="Print the receipt as JSON.")
@click.pass_context
def erase(ctx: click.Context, user_id: str, pseudonymous: bool, as_json: bool) -> None:
    """Erase one user from the feature stores, the event logs and the ingest state.

    Records a tombstone first so that late events of the user are dropped by ingestion.
    Frequency-cap counters live in the running server's memory: erase through the
    PrivacyAdminService gRPC call to clear them too (or restart the server).
    """
    from privacy import PrivacyError, erase_user

    settings = get_settings(ctx)
    try:
        receipt = erase_user(settings, user_id, pseudonymous=pseudonymous, requested_by="cli")
    except PrivacyError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(receipt.to_json())
        return
    click.echo(f"erased user {receipt.user_pseudonym} in {receipt.duration_s:.2f} s (receipt {receipt.receipt_id})")
    for s in receipt.stores:
        click.echo(f"  {s.store:<22} {s.deleted:>8} rows  {s.detail}  [{s.location}]")
    click.echo(f"  tombstone recorded at {receipt.erased_at_ms} (epoch ms)")
    for note in receipt.notes:
        click.echo(f"  note: {note}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def purge(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Remove offline rows older than privacy.retention_days (default 30).

    Feature parts of every view and the feedback/exposure logs; expired tombstones.
    Kafka drops old messages itself after kafka.retention_hours.
    """
    from tqdm import tqdm

    from privacy import purge_expired
    from privacy._retention import purge_targets

    settings = get_settings(ctx)
    with tqdm(total=purge_targets(), desc="purge", unit="dir", disable=as_json, file=click.get_text_stream("stderr")) as bar:
        report = purge_expired(settings, dry_run=dry_run, progress=bar.update)
    if as_json:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {report.rows_removed} rows older than {report.cutoff} "
               f"(retention {report.retention_days} d) in {report.duration_s:.2f} s")
    for name, directory, rows, rewritten, deleted in report.stores:
        if rows:
            click.echo(f"  {name:<34} {rows:>8} rows ({rewritten} files rewritten, {deleted} deleted)")
    click.echo(f"  tombstones forgotten: {report.tombstones_pruned}")


@cli.command("consent-table")
@click.option("--write", "write_to", type=click.Path(dir_okay=False, path_type=Path), default=None, is_flag=False,
              flag_value="docs/privacy.md",
              help="Splice the table into this Markdown file between its consent-table markers "
                   "(default docs/privacy.md).")
def consent_table(write_to: Path | None) -> None:
    """Print the consent decision table (purposes × stages) as Markdown."""
    from privacy import PrivacyError, render_markdown, splice_into

    if write_to is None:
        click.echo(render_markdown(), nl=False)
        return
    try:
        write_to.write_text(splice_into(write_to.read_text()))
    except (OSError, PrivacyError) as exc:
        raise click.ClickException(f"cannot update {write_to}: {exc}") from None
    click.echo(f"consent table written to {write_to}")
