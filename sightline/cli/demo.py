"""`sightline demo`: the whole story on the embedded defaults, stage by stage."""

from __future__ import annotations

import json
import sys

import click

from sightline.cli import get_settings

# A preset small enough for the end-to-end test (about a minute on 2 cores).
_SMALL = dict(users=2_000, products=3_000, advertisers=40, campaigns=120, creatives=360,
              context_events=3_000, logged_requests=12_000, requests=300)


@click.command()
@click.option("--small", is_flag=True, help="A small world and few requests (the end-to-end test uses it).")
@click.option("--requests", type=int, default=None, help="Recommend calls by the simulated apps (default 2,000).")
@click.option("--context-events", type=int, default=None, help="Context events through Kafka (default 20,000).")
@click.option("--logged-requests", type=int, default=None, help="Historic logged requests to train on (default 60,000).")
@click.option("--world-size", type=int, default=2, show_default=True, help="Processes for sharded TorchRec training.")
@click.option("--retrain", is_flag=True, help="Train again even when production/candidate models exist.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the summary figures as JSON.")
@click.option("--no-progress", is_flag=True,
              help="No progress bars (also the default when stderr is not a terminal: logs, CI).")
@click.pass_context
def cli(ctx: click.Context, small: bool, requests: int | None, context_events: int | None,
        logged_requests: int | None, world_size: int, retrain: bool, json_out: str | None, no_progress: bool) -> None:
    """Run the whole story on the embedded defaults.

    Starts the local stack, loads the simulated world into the campaign store, streams
    consented context through Kafka into Feast, trains the sharded TorchRec ranker and
    the XGBoost challenger, starts an experiment between them, serves simulated apps
    over gRPC with the closed-loop responder, ingests the feedback, and prints a summary
    (requests, fill rate, CTR, spend, latency, experiment arms). Data stays in the data
    directory (default ./var); a second run reuses the world, models and experiment.
    """
    from sightline._demo import DemoConfig, run_demo

    sizes = dict(_SMALL) if small else {}
    for key, value in (("requests", requests), ("context_events", context_events), ("logged_requests", logged_requests)):
        if value is not None:
            sizes[key] = value
    config = DemoConfig(world_size=world_size, retrain=retrain, **sizes)
    settings = get_settings(ctx)
    click.secho(f"Sightline demo (data in {settings.data_dir.resolve()})", bold=True)
    # a bar redrawn with carriage returns is one endless line in a log file
    summary = run_demo(settings, config, say=click.echo, progress=not no_progress and sys.stderr.isatty())
    total = sum(t for _, t in summary.stages)
    click.secho(f"\nDemo finished in {total:.0f}s.", bold=True)
    if json_out:
        with open(json_out, "w") as fh:
            json.dump({"figures": summary.figures, "stages": summary.stages}, fh, indent=2, default=str)
