"""`sightline campaigns ...`: manage advertisers, campaigns, creatives and products; reports.

A thin layer over ``campaigns.CampaignStore``: every command opens the store at
``settings.campaign_db_url`` (migrating it), and every change is validated and audited
with ``--actor`` (default: your login name).
"""

from __future__ import annotations

import getpass
import math
from datetime import datetime, timezone
from pathlib import Path

import click

from sightline.cli import get_settings


def _store(ctx: click.Context):
    from campaigns import CampaignStore

    return CampaignStore.from_settings(get_settings(ctx))


def _actor(ctx: click.Context) -> str:
    return ctx.find_object(dict).get("actor") or getpass.getuser()


def _run(fn):
    """Turn campaign errors into a clean CLI error (message names the fix, exit code 1)."""
    from campaigns import CampaignError

    try:
        return fn()
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None


def _console():
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 180)


@click.group()
@click.option("--actor", default=None, help="Who is making the change, for the audit log (default: your login).")
@click.pass_context
def cli(ctx: click.Context, actor: str | None) -> None:
    """Advertisers, campaigns, creatives, products; YAML campaigns-as-code; delivery reports.

    The store is settings.campaign_db_url (SQLite in the data directory by default,
    PostgreSQL via SIGHTLINE_CAMPAIGNS_URL). See docs/campaigns.md.
    """
    ctx.ensure_object(dict)["actor"] = actor


# --- taxonomy and advertisers ----------------------------------------------------------

@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also list the sensitive categories (never targetable).")
@click.option("--top", default=None, help="Only this top-level category.")
def categories(show_all: bool, top: str | None) -> None:
    """List the category taxonomy (ids to use in targeting and product categories)."""
    from campaigns import Taxonomy

    tax = Taxonomy()
    for cat in tax.leaves(include_sensitive=show_all):
        if top and cat.top != top:
            continue
        click.echo(f"{cat.id}{'  (sensitive: never targetable)' if cat.sensitive else ''}")


@cli.command()
@click.pass_context
def advertisers(ctx: click.Context) -> None:
    """List advertisers."""
    for adv in _run(lambda: _store(ctx).list_advertisers()):
        click.echo(f"{adv.id}\t{adv.name}\t{adv.currency}")


@cli.command("advertiser-add")
@click.argument("advertiser_id")
@click.option("--name", required=True, help="Display name.")
@click.option("--currency", default="EUR", show_default=True, help="Currency of its budgets (ISO 4217).")
@click.pass_context
def advertiser_add(ctx: click.Context, advertiser_id: str, name: str, currency: str) -> None:
    """Create an advertiser."""
    from campaigns import Advertiser

    adv = _run(lambda: _store(ctx).create_advertiser(
        Advertiser.from_doc({"id": advertiser_id, "name": name, "currency": currency.upper()}), actor=_actor(ctx)))
    click.echo(f"created advertiser {adv.id}")


# --- campaigns -------------------------------------------------------------------------

def _csv(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@cli.command()
@click.option("--file", "file_", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A YAML file with one campaign (same shape as in 'export'); other options are ignored.")
@click.option("--id", "campaign_id", help="Campaign id (letters, digits, _ - . :).")
@click.option("--advertiser", help="Advertiser id.")
@click.option("--name", help="Display name.")
@click.option("--objective", type=click.Choice(["awareness", "traffic", "conversions"]), default="traffic",
              show_default=True)
@click.option("--status", type=click.Choice(["draft", "active", "paused"]), default="draft", show_default=True)
@click.option("--start", type=click.DateTime(), help="Start (UTC), default now.")
@click.option("--end", type=click.DateTime(), help="End (UTC, exclusive), default open-ended.")
@click.option("--daily-budget", type=float)
@click.option("--lifetime-budget", type=float)
@click.option("--currency", default=None, help="Budget currency (default: the advertiser's).")
@click.option("--bid-strategy", type=click.Choice(["CPC", "CPM"]), default="CPC", show_default=True)
@click.option("--bid", "bid_amount", type=float, help="Bid amount (per click, or per 1000 impressions).")
@click.option("--category", multiple=True, help="Targeted product category (repeat or comma-separate).")
@click.option("--keyword", multiple=True, help="Intent keyword.")
@click.option("--scene", multiple=True, help="Scene label, e.g. gym.")
@click.option("--object", "objects", multiple=True, help="Detected object label.")
@click.option("--location", multiple=True, help="Location category, e.g. retail.")
@click.option("--region", multiple=True, help="Region code, e.g. DE or DE-BE.")
@click.option("--device", multiple=True, help="glasses or phone.")
@click.option("--exclude", multiple=True, help="Excluded (brand-safety) category.")
@click.option("--cap-day", type=int, help="Impressions per user per day.")
@click.option("--cap-week", type=int, help="Impressions per user per week.")
@click.option("--cap-skip-uncounted", is_flag=True,
              help="Do not serve users without personalization consent (a cap cannot count them); "
                   "default: serve them uncapped.")
@click.option("--headline", help="Creative headline (creates creative '<id>-1').")
@click.option("--body", default="", help="Creative body text.")
@click.option("--landing-url", help="Creative landing URL (https).")
@click.option("--image-url", default="", help="Creative image URL (https).")
@click.option("--cta", default="Shop now", show_default=True, help="Call to action.")
@click.pass_context
def create(ctx: click.Context, file_: Path | None, campaign_id, advertiser, name, objective, status, start, end,
           daily_budget, lifetime_budget, currency, bid_strategy, bid_amount, category, keyword, scene, objects,
           location, region, device, exclude, cap_day, cap_week, cap_skip_uncounted, headline, body, landing_url,
           image_url, cta) -> None:
    """Create a campaign from options or from a YAML file (validated; see docs/campaigns.md)."""
    from campaigns import Campaign, load_yaml

    store = _store(ctx)
    if file_ is not None:
        import yaml

        raw = yaml.safe_load(file_.read_text())
        doc = _run(lambda: load_yaml(file_.read_text())) if isinstance(raw, dict) and "campaigns" in raw \
            else {"campaigns": [raw]}
        items = doc.get("campaigns") or []
        if len(items) != 1:
            raise click.ClickException(f"{file_} holds {len(items)} campaigns; 'create' takes one (use 'import' for many)")
        spec = items[0]
    else:
        missing = [n for n, v in (("--id", campaign_id), ("--advertiser", advertiser), ("--name", name),
                                  ("--bid", bid_amount)) if v in (None, "")]
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or pass --file campaign.yaml)")
        if currency is None:
            currency = _run(lambda: store.get_advertiser(advertiser).currency)
        spec = {
            "id": campaign_id, "advertiser_id": advertiser, "name": name, "objective": objective, "status": status,
            "schedule": {"start": (start.replace(tzinfo=timezone.utc) if start else datetime.now(timezone.utc)),
                         "end": end.replace(tzinfo=timezone.utc) if end else None},
            "budget": {"daily": daily_budget, "lifetime": lifetime_budget, "currency": currency},
            "bid": {"strategy": bid_strategy, "amount": bid_amount},
            "targeting": {"categories": _csv(category), "keywords": _csv(keyword), "scenes": _csv(scene),
                          "objects": _csv(objects), "location_categories": _csv(location), "regions": _csv(region),
                          "devices": _csv(device)},
            "frequency_cap": {"per_day": cap_day, "per_week": cap_week, "skip_uncounted": cap_skip_uncounted},
            "excluded_categories": _csv(exclude),
            "creatives": ([{"id": f"{campaign_id}-1", "headline": headline, "body": body, "landing_url": landing_url or "",
                            "image_url": image_url, "call_to_action": cta}] if headline else []),
        }
    campaign = _run(lambda: store.create_campaign(Campaign.from_doc(spec, where=repr(spec.get("id"))),
                                                  actor=_actor(ctx)))
    click.echo(f"created campaign {campaign.id} ({campaign.status}, {len(campaign.creatives)} creatives)")


@cli.command("list")
@click.option("--advertiser", default=None)
@click.option("--status", multiple=True, type=click.Choice(["draft", "active", "paused", "ended", "archived"]))
@click.option("--objective", type=click.Choice(["awareness", "traffic", "conversions"]), default=None)
@click.option("--category", default=None, help="Campaigns targeting this category (leaf or top).")
@click.option("--limit", type=int, default=200, show_default=True)
@click.pass_context
def list_(ctx: click.Context, advertiser, status, objective, category, limit) -> None:
    """List campaigns (filtered)."""
    from rich.table import Table

    found = _run(lambda: _store(ctx).list_campaigns(advertiser_id=advertiser, status=list(status) or None,
                                                   objective=objective, category=category, limit=limit))
    table = Table("id", "advertiser", "name", "status", "objective", "daily", "lifetime", "bid", "creatives",
                  "updated (UTC)")
    for c in found:
        table.add_row(c.id, c.advertiser_id, c.name, c.status, c.objective,
                      f"{c.budget.daily:g}" if c.budget.daily else "-",
                      f"{c.budget.lifetime:g}" if c.budget.lifetime else "-",
                      f"{c.bid.strategy} {c.bid.amount:g} {c.budget.currency}", str(len(c.creatives)),
                      c.updated_at.strftime("%Y-%m-%d %H:%M") if c.updated_at else "")
    _console().print(table)
    click.echo(f"{len(found)} campaign(s)")


@cli.command()
@click.argument("campaign_id")
@click.option("--audit", is_flag=True, help="Also print its audit log.")
@click.pass_context
def show(ctx: click.Context, campaign_id: str, audit: bool) -> None:
    """Print one campaign as YAML (the import/export shape)."""
    from campaigns import dump_yaml
    from campaigns._yaml import _compact

    store = _store(ctx)
    c = _run(lambda: store.get_campaign(campaign_id))
    click.echo(dump_yaml(_compact(c.to_doc(timestamps=True))).rstrip())
    if audit:
        _print_audit(store.audit_log(entity_type="campaign", entity_id=campaign_id))


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


@cli.command()
@click.argument("campaign_id")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", required=True,
              help="Field to change, e.g. budget.daily=80, status=paused, targeting.regions=[DE, AT] (YAML values).")
@click.pass_context
def update(ctx: click.Context, campaign_id: str, sets: tuple[str, ...]) -> None:
    """Change fields of a campaign (validated; recorded in the audit log)."""
    changes = {}
    for item in sets:
        if "=" not in item:
            raise click.UsageError(f"--set {item!r} needs PATH=VALUE, e.g. budget.daily=80")
        path, value = item.split("=", 1)
        changes[path.strip()] = _parse_value(value)
    c = _run(lambda: _store(ctx).update_campaign(campaign_id, changes, actor=_actor(ctx)))
    click.echo(f"updated campaign {c.id} (version {c.version})")


def _status_command(name: str, status: str, help_text: str):
    @cli.command(name, help=help_text)
    @click.argument("campaign_ids", nargs=-1, required=True)
    @click.pass_context
    def command(ctx: click.Context, campaign_ids: tuple[str, ...]) -> None:
        store = _store(ctx)
        for cid in campaign_ids:
            c = _run(lambda: store.set_status(cid, status, actor=_actor(ctx)))
            click.echo(f"campaign {c.id} is now {c.status}")

    return command


_status_command("pause", "paused", "Pause campaigns (serving stops showing them within seconds).")
_status_command("resume", "active", "Resume (activate) campaigns; they need a creative and a live schedule.")
_status_command("archive", "archived", "Archive campaigns (final; they stop serving and cannot be resumed).")


@cli.command("end-expired")
@click.pass_context
def end_expired(ctx: click.Context) -> None:
    """Mark active/paused campaigns whose schedule has ended as 'ended' (safe to run from cron)."""
    ids = _run(lambda: _store(ctx).end_expired(actor=_actor(ctx)))
    click.echo(f"{len(ids)} campaign(s) ended{': ' + ', '.join(ids) if ids else ''}")


@cli.command()
@click.option("--campaign", "campaign_id", default=None)
@click.option("--entity-type", type=click.Choice(["advertiser", "campaign", "product", "products", "campaigns",
                                                  "advertisers", "creatives"]), default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def audit(ctx: click.Context, campaign_id: str | None, entity_type: str | None, limit: int) -> None:
    """Show the audit log (who changed what, when; newest first)."""
    entries = _store(ctx).audit_log(entity_type="campaign" if campaign_id else entity_type, entity_id=campaign_id,
                                    limit=limit)
    _print_audit(entries)


def _print_audit(entries) -> None:
    from campaigns._yaml import field_diff

    for e in entries:
        click.echo(f"{e.at:%Y-%m-%d %H:%M:%S} {e.actor:<20} {e.action:<16} {e.entity_type} {e.entity_id}")
        if e.before is not None and e.after is not None:
            for line in field_diff(e.before, e.after)[:20]:
                click.echo(f"    {line}")


# --- campaigns as code -----------------------------------------------------------------

@cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show the diff.")
@click.pass_context
def import_(ctx: click.Context, path: Path, dry_run: bool) -> None:
    """Import a campaigns-as-code YAML file: shows the diff, then applies it (idempotent)."""
    from campaigns import apply_import, load_yaml

    store = _store(ctx)
    plan = _run(lambda: apply_import(store, load_yaml(path.read_text()), actor=_actor(ctx), dry_run=dry_run))
    click.echo(plan.render())
    if dry_run and plan.pending:
        click.echo("(dry run: nothing written)")


@cli.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: stdout).")
@click.option("--advertiser", default=None, help="Only this advertiser.")
@click.option("--products", "include_products", is_flag=True, help="Include the product catalog.")
@click.pass_context
def export(ctx: click.Context, output: Path | None, advertiser: str | None, include_products: bool) -> None:
    """Export campaigns (and optionally products) as YAML; importing it back changes nothing."""
    from campaigns import dump_yaml, export_document

    text = dump_yaml(_run(lambda: export_document(_store(ctx), advertiser_id=advertiser,
                                                  include_products=include_products)))
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)


# --- delivery reports ------------------------------------------------------------------

def _fmt(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:,.2f}"


@cli.command()
@click.option("--campaign", "campaign_ids", multiple=True, help="Campaign id (repeat); default: all.")
@click.option("--advertiser", default=None)
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (UTC), inclusive.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day (UTC), inclusive.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write CSV here.")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a chart of spend against plan here.")
@click.pass_context
def report(ctx: click.Context, campaign_ids, advertiser, since, until, csv_path, png_path) -> None:
    """Delivery per campaign and day from the feedback event log: impressions, clicks,
    conversions, spend, CTR, CVR, CPC, CPA, budget used, pacing status."""
    from rich.table import Table

    from campaigns import plot_spend, report_from_log, totals

    settings = get_settings(ctx)
    store = _store(ctx)
    if campaign_ids:
        found = [_run(lambda cid=cid: store.get_campaign(cid)) for cid in campaign_ids]
    else:
        found = store.list_campaigns(advertiser_id=advertiser)
    df = report_from_log(settings.data_dir, found, since=since.date() if since else None,
                         until=until.date() if until else None)
    table = Table("campaign", "day", "impr.", "clicks", "conv.", "spend", "CTR", "CVR", "CPC", "CPA", "plan",
                  "used", "pacing", title="Delivery (UTC days)")
    for r in df.iter_rows(named=True):
        table.add_row(r["campaign_id"], r["day"].isoformat(), f"{r['impressions']:,}", f"{r['clicks']:,}",
                      f"{r['conversions']:,}", _fmt(r["spend"]), _fmt(r["ctr"], True), _fmt(r["cvr"], True),
                      _fmt(r["cpc"]), _fmt(r["cpa"]), _fmt(r["planned_spend"]), _fmt(r["budget_used"], True),
                      r["pacing_status"])
    t = totals(df)
    table.add_row("TOTAL", "", f"{int(t['impressions']):,}", f"{int(t['clicks']):,}", f"{int(t['conversions']):,}",
                  _fmt(t["spend"]), _fmt(t["ctr"], True), _fmt(t["cvr"], True), _fmt(t["cpc"]), _fmt(t["cpa"]),
                  _fmt(t["planned_spend"]), "", "")
    _console().print(table)
    if csv_path:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        df.write_csv(csv_path)
        click.echo(f"wrote {csv_path}")
    if png_path:
        plot_spend(df, png_path)
        click.echo(f"wrote {png_path}")
