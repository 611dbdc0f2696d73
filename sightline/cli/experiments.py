"""`sightline experiments create|update|list|show|start|stop|report|check`.

Definitions live in the campaign database (``campaigns.url``); reports read the
exposure and feedback event logs under the data directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sightline.cli import get_settings


def _store(ctx: click.Context):
    from experiments import ExperimentStore

    return ExperimentStore.from_settings(get_settings(ctx))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
def cli() -> None:
    """Define, run and analyse A/B experiments.

    Typical flow: `create exp.yaml` → `start ID` → (serving assigns arms, logs exposures)
    → `report ID` (any time: sequential tests make early looks safe) → `stop ID`.
    """


def _load(path: Path):
    from experiments import load_experiment_yaml

    return load_experiment_yaml(path.read_text())


@cli.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--start", is_flag=True, help="Start it right away.")
@click.pass_context
def create(ctx: click.Context, definition: Path, start: bool) -> None:
    """Create an experiment (as a draft) from a YAML DEFINITION file.

    \b
    id: ranker_xgb            # unique; also the default hash salt
    layer: ranking            # experiments in one layer never share a unit
    buckets: [0, 10000]       # share of the layer's 10,000 buckets (optional)
    unit_type: user           # or request; users without consent fall back to request ids
    primary_metric: ctr       # ctr | cvr | revenue_per_1k_requests | clicks_per_unit | revenue_per_unit
    arms:
      - {name: control, weight: 50, params: {ranker: production}}
      - {name: xgboost, weight: 50, params: {ranker: xgboost, reserve: 0.5, num_ads: 3}}
    """
    from experiments import ExperimentError

    try:
        store = _store(ctx)
        exp = store.create(_load(definition))
        if start:
            exp = store.start(exp.id)
    except ExperimentError as exc:
        raise _fail(exc) from None
    click.echo(f"created experiment {exp.id} ({exp.status}, layer {exp.layer}, arms {', '.join(exp.arm_names)})")


@cli.command()
@click.argument("definition", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def update(ctx: click.Context, definition: Path) -> None:
    """Replace a draft's definition (a running one may only change its description)."""
    from experiments import ExperimentError

    try:
        exp = _store(ctx).update(_load(definition))
    except ExperimentError as exc:
        raise _fail(exc) from None
    click.echo(f"updated experiment {exp.id} (revision {exp.version})")


@cli.command("list")
@click.option("--status", type=click.Choice(["draft", "running", "stopped"]), default=None, help="Only this status.")
@click.pass_context
def list_(ctx: click.Context, status: str | None) -> None:
    """List experiments."""
    from rich.console import Console
    from rich.table import Table

    from experiments import ExperimentError

    try:
        exps = _store(ctx).list(status=status)
    except ExperimentError as exc:
        raise _fail(exc) from None
    table = Table()
    for c in ("id", "status", "layer", "buckets", "unit", "arms (weight)", "primary", "started"):
        table.add_column(c)
    for e in exps:
        table.add_row(e.id, e.status, e.layer, f"{e.buckets[0]}-{e.buckets[1]}", e.unit_type,
                      ", ".join(f"{a}={w:.0%}" for a, w in e.weights.items()), e.primary_metric,
                      str(e.started_at)[:19] if e.started_at else "–")
    Console().print(table)


@cli.command()
@click.argument("experiment_id")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.pass_context
def show(ctx: click.Context, experiment_id: str, fmt: str) -> None:
    """Show one experiment's definition and status."""
    import yaml

    from experiments import ExperimentError

    try:
        exp = _store(ctx).get(experiment_id)
    except ExperimentError as exc:
        raise _fail(exc) from None
    data = exp.model_dump(mode="json")
    click.echo(json.dumps(data, indent=2) if fmt == "json" else yaml.safe_dump(data, sort_keys=False))


def _transition(ctx: click.Context, action: str, experiment_id: str):
    """Run a store lifecycle call (``start``/``stop``), turning its errors into CLI errors."""
    from experiments import ExperimentError

    try:
        return getattr(_store(ctx), action)(experiment_id)
    except ExperimentError as exc:
        raise _fail(exc) from None


@cli.command()
@click.argument("experiment_id")
@click.pass_context
def start(ctx: click.Context, experiment_id: str) -> None:
    """Start a draft (servers pick it up within their refresh interval, no restart)."""
    exp = _transition(ctx, "start", experiment_id)
    click.echo(f"experiment {exp.id} is running since {exp.started_at}")


@cli.command()
@click.argument("experiment_id")
@click.pass_context
def stop(ctx: click.Context, experiment_id: str) -> None:
    """Stop an experiment (final; a new split needs a new experiment)."""
    exp = _transition(ctx, "stop", experiment_id)
    click.echo(f"experiment {exp.id} stopped at {exp.stopped_at}")


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Verify this build hashes units exactly as the golden cases pin (serving = analysis)."""
    from experiments import check_golden_cases

    result = check_golden_cases()
    if not result.ok:
        raise click.ClickException("golden cases FAILED:\n" + "\n".join(result.mismatches))
    click.echo(f"golden cases ok ({result.cases} cases, file version {result.version})")


@cli.command()
@click.argument("experiment_id")
@click.option("--format", "fmt", type=click.Choice(["table", "html", "json", "csv"]), default="table",
              show_default=True, help="table = terminal; html = one self-contained page with plots.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write here (default: stdout; html defaults to reports/<id>.html under the data directory).")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="Significance level.")
@click.option("--correction", type=click.Choice(["holm", "bh"]), default="holm", show_default=True,
              help="Multiple-testing correction across metrics.")
@click.option("--no-cuped", is_flag=True, help="Do not use the pre-period covariate.")
@click.option("--pre-period-days", type=float, default=14.0, show_default=True)
@click.option("--item-kind", type=click.Choice(["ad", "product"]), default=None, help="Only ads or only suggestions.")
@click.option("--min-lift", type=float, default=0.02, show_default=True,
              help="Smallest relative lift that matters (drives 'keep running').")
@click.option("--looks", type=int, default=12, show_default=True, help="Points on the cumulative timeline (0 = none).")
@click.pass_context
def report(ctx: click.Context, experiment_id: str, fmt: str, output: Path | None, alpha: float, correction: str,
           no_cuped: bool, pre_period_days: float, item_kind: str | None, min_lift: float, looks: int) -> None:
    """Analyse an experiment from the exposure and feedback logs and say what to decide."""
    from features import read_events

    from experiments import AnalysisOptions, ExperimentError, analyze, check_golden_cases
    from experiments._report import render_html, render_terminal, to_csv, to_json

    settings = get_settings(ctx)
    try:
        exp = _store(ctx).get(experiment_id)
        exposures = read_events(settings.data_dir, "exposures")
        feedback = read_events(settings.data_dir, "feedback")
        options = AnalysisOptions(alpha=alpha, correction=correction, cuped=not no_cuped,
                                  pre_period_days=pre_period_days, item_kind=item_kind,
                                  timeline_points=looks if fmt == "html" else 0, min_relevant_lift=min_lift)
        result = analyze(exp, exposures, feedback, options=options)
    except ExperimentError as exc:
        raise _fail(exc) from None
    if fmt == "table":
        render_terminal(result)
        return
    if fmt == "html":
        text = render_html(result, golden_ok=check_golden_cases().ok)
        output = output or settings.data_dir / "reports" / f"{exp.id}.html"
    else:
        text = to_json(result) if fmt == "json" else to_csv(result)
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    click.echo(f"wrote {output} ({result.decision.verdict}: {result.decision.headline})")
