"""`sightline train`: build a point-in-time training set, train one model kind, register it."""

from __future__ import annotations

import json
import logging

import click

from sightline.cli import get_settings

log = logging.getLogger(__name__)


def impressions_from_event_log(data_dir):
    """Logged impressions with click/conversion labels from the feedback event log.

    Clicks and conversions are separate events joined to their impression by
    ``impression_token``; their own event times become ``click_time``/``conversion_time``
    so point-in-time features count them only from when they happened.
    """
    import polars as pl

    from features import read_events

    fb = read_events(data_dir, "feedback").unique(subset=["event_id"], keep="first")
    imp = fb.filter(pl.col("type") == "impression")
    first = lambda kind, col: (fb.filter(pl.col("type") == kind).group_by("impression_token")  # noqa: E731
                               .agg(pl.col("event_time").min().alias(col)))
    return (imp.join(first("click", "click_time"), on="impression_token", how="left")
            .join(first("conversion", "conversion_time"), on="impression_token", how="left")
            .with_columns(click=pl.col("click_time").is_not_null(),
                          conversion=pl.col("conversion_time").is_not_null() & pl.col("click_time").is_not_null()))


@click.command()
@click.option("--model", "kind", type=click.Choice(["torchrec", "xgboost", "logreg", "popularity"]), default="torchrec",
              show_default=True, help="Model kind to train.")
@click.option("--world-size", type=click.IntRange(1, 64), default=1, show_default=True,
              help="TorchRec ranks (processes; gloo on CPU, nccl on GPUs). Ignored by other kinds.")
@click.option("--source", type=click.Choice(["auto", "eventlog", "simulate"]), default="auto", show_default=True,
              help="eventlog: the feedback event log + Feast point-in-time join; simulate: a fresh log from the "
                   "simulator's default world with polars point-in-time features; auto: eventlog when it has "
                   "impressions, else simulate.")
@click.option("--requests", type=int, default=100_000, show_default=True, help="Simulated requests (--source simulate).")
@click.option("--seed", type=int, default=1, show_default=True, help="Simulation seed.")
@click.option("--epochs", type=int, default=None, help="TorchRec epochs (default from RankerConfig).")
@click.option("--batch-size", type=int, default=None, help="TorchRec global batch size.")
@click.option("--max-steps", type=int, default=None, help="Cap TorchRec steps per epoch (smoke runs).")
@click.option("--alias", type=click.Choice(["candidate", "production", "none"]), default="candidate", show_default=True,
              help="Alias to point at the new version.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Keep checkpoints and the report here (default: a temporary directory).")
@click.pass_context
def cli(ctx: click.Context, kind: str, world_size: int, source: str, requests: int, seed: int, epochs: int | None,
        batch_size: int | None, max_steps: int | None, alias: str, work_dir: str | None) -> None:
    """Train a ranking model on point-in-time features and register it.

    Prints the new version and its test metrics (with the Bayes-optimal ceiling when the
    data comes from the simulator). Promote it with `sightline models promote VERSION`.
    """
    from models import Registry, TrainingDataError, TrainingError, train_and_register
    from models._torchrec import RankerConfig

    settings = get_settings(ctx)
    store = None
    impressions = None
    if source in ("auto", "eventlog"):
        impressions = impressions_from_event_log(settings.data_dir)
        if impressions.height == 0:
            if source == "eventlog":
                raise click.ClickException(f"no impressions in the feedback event log under {settings.data_dir}; "
                                           "run `sightline ingest` first or use --source simulate")
            impressions = None
        else:
            from features import open_store

            store = open_store(settings)
            click.echo(f"data: {impressions.height} impressions from the event log; features: Feast point-in-time join")
    if impressions is None:
        from simulation import WorldConfig, build_world, simulate_logged_impressions

        click.echo(f"data: simulating {requests} requests (default world, seed {seed}); features: polars point-in-time")
        impressions = simulate_logged_impressions(build_world(WorldConfig()), requests, seed=seed)
        source = "simulate"
    cfg = RankerConfig()
    if epochs:
        cfg.epochs = epochs
    if batch_size:
        cfg.batch_size = batch_size
    try:
        rec, metrics = train_and_register(
            kind, impressions, Registry(settings), store=store, world_size=world_size, ranker_config=cfg,
            max_steps=max_steps, alias=None if alias == "none" else alias, work_dir=work_dir, source=source)
    except (TrainingDataError, TrainingError) as exc:
        raise click.ClickException(str(exc)) from None
    short = {k: metrics[k] for k in ("auc", "logloss", "ne", "calibration")}
    if "bayes" in metrics:
        short["bayes_auc"] = metrics["bayes"]["auc"]
    click.echo(f"registered {rec.version}" + (f" as {alias}" if alias != "none" else ""))
    click.echo(json.dumps(short, default=float))
