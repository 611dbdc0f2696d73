"""``sightline simulate``: build/load the synthetic world, play traffic, close the loop.

The world is rebuilt from its seed and sizes by every subcommand (deterministic, about
a second at default size), so ``world``, ``traffic`` and ``respond`` agree as long as
they get the same ``--seed``/size options.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import click

from sightline.cli import get_settings

log = logging.getLogger(__name__)


def _world_options(fn):
    opts = [
        click.option("--seed", type=int, default=7, show_default=True, help="World seed (same seed, same world)."),
        click.option("--users", type=int, default=20_000, show_default=True),
        click.option("--products", type=int, default=50_000, show_default=True),
        click.option("--advertisers", type=int, default=300, show_default=True),
        click.option("--campaigns", "n_campaigns", type=int, default=1_000, show_default=True),
        click.option("--creatives", type=int, default=3_000, show_default=True),
        click.option("--start-date", type=click.DateTime(["%Y-%m-%d"]), default=None,
                     help="Campaigns run from about this date (default: today, UTC, so they are live now)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _build(seed, users, products, advertisers, n_campaigns, creatives, start_date):
    from simulation import SimulationError, WorldConfig, build_world

    day = start_date.date() if start_date else datetime.now(timezone.utc).date()
    try:
        return build_world(WorldConfig(seed=seed, n_users=users, n_products=products, n_advertisers=advertisers,
                                       n_campaigns=n_campaigns, n_creatives=creatives, start_date=day))
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None


def _parse_start(value: str | None) -> datetime | None:
    if value is None or value == "now":
        return datetime.now(timezone.utc)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO time; use e.g. 2026-11-23T08:00:00+00:00 or 'now'") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.group()
def cli() -> None:
    """The synthetic world, traffic and closed-loop responder with known ground truth.

    \b
    sightline simulate world            # build the default world and load it into the campaign store
    sightline simulate traffic --speedup 60   # a day of context/consent events in 24 minutes
    sightline simulate respond --api-key KEY --requests 1000
    """


@cli.command("world")
@_world_options
@click.option("--db", default=None, help="SQLAlchemy URL of the campaign store (default: settings' campaign DB).")
@click.option("--no-load", is_flag=True, help="Do not load into the campaign store (only --out).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the world's tables (and --logged impressions) as parquet into this directory.")
@click.option("--logged", type=int, default=0, show_default=True,
              help="Also simulate this many logged requests (impressions with true probabilities) into --out.")
@click.option("--days", type=float, default=7.0, show_default=True, help="Days the logged requests span.")
@click.pass_context
def world_cmd(ctx, seed, users, products, advertisers, n_campaigns, creatives, start_date, db, no_load, out, logged,
              days) -> None:
    """Build the world and load advertisers, campaigns, creatives and products into the store."""
    from tqdm import tqdm

    settings = get_settings(ctx)
    steps = (0 if no_load else 1) + (1 if out else 0) + (1 if logged else 0) + 1
    with tqdm(total=steps, desc="simulate world", unit="step") as bar:
        bar.set_postfix_str("building")
        world = _build(seed, users, products, advertisers, n_campaigns, creatives, start_date)
        bar.update()
        summary: dict = {"seed": seed, "users": world.n_users, "products": world.products.height,
                         "advertisers": world.advertisers.height, "campaigns": world.campaigns.height,
                         "creatives": world.creatives.height,
                         "consent_profiles": dict(world.users["consent_profile"].value_counts().iter_rows())}
        if not no_load:
            from campaigns import AlreadyExists, CampaignError, CampaignStore

            from simulation import load_world

            bar.set_postfix_str("loading into the campaign store")
            url = db or settings.campaign_db_url
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            try:
                store = CampaignStore.open(url, max_bid=settings.campaigns.max_bid)
                try:
                    summary["loaded"] = load_world(world, store)
                finally:
                    store.close()
            except AlreadyExists as exc:
                raise click.ClickException(f"{exc}. The store already holds a world: load into a fresh database "
                                           "(--db sqlite:///path/new.db or another --data-dir), or pass --no-load") from None
            except CampaignError as exc:
                raise click.ClickException(f"{exc}") from None
            bar.update()
        if out:
            bar.set_postfix_str(f"writing {out}")
            out.mkdir(parents=True, exist_ok=True)
            for name in ("users", "advertisers", "products", "campaigns", "creatives"):
                getattr(world, name).write_parquet(out / f"{name}.parquet")
            bar.update()
        if logged:
            from simulation import bayes_metrics, simulate_logged_impressions

            bar.set_postfix_str(f"simulating {logged} logged requests")
            frame = simulate_logged_impressions(world, logged, seed=seed, days=days)
            target = (out or Path(settings.data_dir)) / "logged_impressions.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            frame.write_parquet(target)
            summary["logged"] = {"path": str(target), "impressions": frame.height,
                                 "bayes": bayes_metrics(frame["click"], frame["p_click"])}
            bar.update()
    click.echo(json.dumps(summary, indent=2, default=str))


@cli.command("traffic")
@_world_options
@click.option("--traffic-seed", type=int, default=1, show_default=True, help="Seed of the traffic (who, when, what).")
@click.option("--events", type=int, default=None, help="Context events to send (default: a day of the users' activity).")
@click.option("--days", type=float, default=1.0, show_default=True, help="Simulated time the events span.")
@click.option("--start", default="now", show_default=True, help="Simulated start time (ISO 8601) or 'now'.")
@click.option("--rate", type=float, default=None, help="Send at this many events per second.")
@click.option("--speedup", type=float, default=None, help="Time compression: 1 = real time, 60 = a day in 24 min.")
@click.option("--realtime", is_flag=True, help="Same as --speedup 1.")
@click.option("--stamp-now", is_flag=True, help="Stamp events with the wall clock at send (freshness tests).")
@click.option("--withdrawal-share", type=float, default=0.02, show_default=True,
              help="Share of consenting users who withdraw consent during the run.")
@click.pass_context
def traffic_cmd(ctx, seed, users, products, advertisers, n_campaigns, creatives, start_date, traffic_seed, events,
                days, start, rate, speedup, realtime, stamp_now, withdrawal_share) -> None:
    """Produce context and consent events to Kafka (as fast as possible unless paced)."""
    from tqdm import tqdm

    from simulation import SimulationError, plan_traffic, produce_traffic

    settings = get_settings(ctx)
    if realtime:
        speedup = 1.0
    world = _build(seed, users, products, advertisers, n_campaigns, creatives, start_date)
    try:
        plan = plan_traffic(world, events, traffic_seed, _parse_start(start), days, withdrawal_share=withdrawal_share)
        with tqdm(total=plan.n_context + plan.n_consent, desc="traffic", unit="ev", unit_scale=True) as bar:
            stats = produce_traffic(world, plan, settings, rate=rate, speedup=speedup, stamp_now=stamp_now,
                                    progress=bar.update)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(vars(stats), indent=2, default=str))


@cli.command("respond")
@_world_options
@click.option("--api-key", required=True, help="API key with the recommend and feedback scopes (x-api-key).")
@click.option("--target", default=None, help="host:port of the server (default: settings serving.host:port).")
@click.option("--requests", "n_requests", type=int, default=1_000, show_default=True)
@click.option("--traffic-seed", type=int, default=2, show_default=True)
@click.option("--rate", type=float, default=None, help="Requests per second (default: as fast as answered).")
@click.option("--ad-slots", type=click.IntRange(0, 10), default=2, show_default=True)
@click.option("--suggestions", type=click.IntRange(0, 50), default=3, show_default=True)
@click.option("--start", default="now", show_default=True, help="Simulated start time of the requests, or 'now'.")
@click.option("--days", type=float, default=1.0, show_default=True)
@click.option("--sim-time", is_flag=True, help="Send simulated event times with feedback (default: server time).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the served impressions with their true probabilities as parquet.")
@click.pass_context
def respond_cmd(ctx, seed, users, products, advertisers, n_campaigns, creatives, start_date, api_key, target,
                n_requests, traffic_seed, rate, ad_slots, suggestions, start, days, sim_time, out) -> None:
    """Ask the server for slates and report impressions, clicks and conversions per the ground truth."""
    from tqdm import tqdm

    from simulation import GrpcServingClient, SimulationError, respond

    settings = get_settings(ctx)
    target = target or f"{settings.serving.host}:{settings.serving.port}"
    world = _build(seed, users, products, advertisers, n_campaigns, creatives, start_date)
    try:
        with GrpcServingClient(target, api_key) as client, tqdm(total=n_requests, desc="respond", unit="req") as bar:
            result = respond(world, client, n_requests, traffic_seed, start_time=_parse_start(start), days=days,
                             ad_slots=ad_slots, suggestions=suggestions, rate=rate, sim_time=sim_time,
                             progress=bar.update)
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        result.frame.write_parquet(out)
    click.echo(json.dumps(result.summary(), indent=2))


