"""`sightline ingest`: consumer-group workers from Kafka into Feast, and their figures."""

from __future__ import annotations

import logging
import signal
import threading
import time

import click

from sightline.cli import get_settings

log = logging.getLogger(__name__)


@click.command()
@click.option("--workers", "-w", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes in the consumer group (partitions are shared between them).")
@click.option("--stats", "show_stats", is_flag=True,
              help="Show consumer lag, events/s, DLQ counts and freshness instead of consuming.")
@click.option("--watch", type=click.FloatRange(0.5), default=None,
              help="With --stats: refresh every N seconds until Ctrl-C.")
@click.option("--max-idle", type=click.FloatRange(0.1), default=None,
              help="Exit after this many seconds without a new record (replays, scripts).")
@click.option("--metrics-port", type=int, default=None,
              help="Export Prometheus metrics from worker i on 127.0.0.1:PORT+i (default: streaming.metrics_port).")
@click.pass_context
def cli(ctx: click.Context, workers: int, show_stats: bool, watch: float | None, max_idle: float | None,
        metrics_port: int | None) -> None:
    """Consume context, consent, feedback and exposure events into Feast.

    Each worker validates events (bad ones go to `<topic>.dlq`), applies consent,
    computes windowed features and writes them to the online and offline stores,
    then commits its offsets. Stop with Ctrl-C: workers flush and commit first.
    See docs/streaming.md.
    """
    settings = get_settings(ctx)
    if show_stats:
        _show_stats(settings, watch)
        return
    if metrics_port is not None:
        settings = settings.model_copy(update={"streaming": settings.streaming.model_copy(update={"metrics_port": metrics_port})})
    from streaming import IngestUnavailable, IngestWorker, run_workers

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    click.echo(f"ingest: {workers} worker(s) in group {settings.streaming.group_id!r} on "
               f"{', '.join(settings.topic(s) for s in ('context', 'consent', 'feedback', 'exposures'))}; Ctrl-C stops",
               err=True)
    try:
        if workers == 1:
            totals = _run_one_with_progress(IngestWorker(settings, "0"), stop, max_idle)
            click.echo(f"ingest: stored {int(totals.get('stored', 0))} events, "
                       f"DLQ {sum(v for k, v in totals.items() if k.startswith('dlq.'))}", err=True)
        else:
            run_workers(settings, workers, stop, max_idle_s=max_idle)
    except IngestUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def _run_one_with_progress(worker, stop: threading.Event, max_idle: float | None):
    from tqdm import tqdm

    bar = tqdm(desc="ingest", unit="ev", dynamic_ncols=True, mininterval=1.0)

    def on_batch(result):
        bar.update(sum(v for k, v in result.counts.items() if k.startswith(("in.", "dlq."))))

    try:
        return worker.run(stop, max_idle_s=max_idle, on_batch=on_batch)
    finally:
        bar.close()


def _show_stats(settings, watch: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from streaming import read_stats

    console = Console()
    while True:
        stats = read_stats(settings)
        table = Table(title=f"ingest group {settings.streaming.group_id}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for topic, lag in sorted(stats.lag.items()):
            table.add_row(f"lag {topic}", str(lag))
        table.add_row("events/s (live workers)", f"{stats.events_per_s:,.0f}")
        table.add_row("freshness p50 / p99 (s)", "-" if stats.freshness_p99_s is None
                      else f"{stats.freshness_p50_s:.3f} / {stats.freshness_p99_s:.3f}")
        for key, n in sorted(stats.dlq.items()):
            table.add_row(f"DLQ {key}", str(n))
        for topic, n in sorted(stats.dlq_topic_messages.items()):
            table.add_row(f"messages in {topic}", str(n))
        for wid, c in sorted(stats.workers.items()):
            age = time.time() - c.get("updated_ms", 0) / 1000
            table.add_row(f"worker {wid}", f"stored {int(c.get('stored', 0))}, dropped "
                          f"{int(sum(v for k, v in c.items() if k.startswith('dropped.')))}, "
                          f"replayed {int(c.get('replayed', 0))}, updated {age:.0f}s ago")
        console.print(table)
        if watch is None:
            return
        time.sleep(watch)
