"""`sightline stack up|down|status`: the local broker, the topics and the Feast repo."""

from __future__ import annotations

import click

from sightline.cli import get_settings


@click.group()
def cli() -> None:
    """Start, stop and inspect the local stack (Kafka broker, topics, Feast repo).

    With profile `prod` (or SIGHTLINE_KAFKA_BOOTSTRAP set) no broker is started; `up`
    then only creates the topics and applies the Feast repo against the external services.
    """


@cli.command()
@click.pass_context
def up(ctx: click.Context) -> None:
    """Start the broker (if local), create the topics, apply the Feast repo."""
    from features import apply_repo
    from sightline.stack import KafkaStackError, LocalKafka, ensure_topics, project_topics

    settings = get_settings(ctx)
    try:
        if settings.kafka.bootstrap:
            bootstrap = settings.kafka.bootstrap
            click.echo(f"kafka: using external cluster {bootstrap}")
        else:
            kafka = LocalKafka(settings)
            click.echo(f"kafka: starting the local broker in {kafka.home} ...")
            bootstrap = kafka.start()
            click.echo(f"kafka: broker up at {bootstrap} (log {kafka.log_file})")
        created = ensure_topics(bootstrap, project_topics(settings), settings.kafka.replication_factor)
        click.echo(f"kafka: topics ready ({len(created)} created)")
    except KafkaStackError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("feast: applying the feature repo ...")
    apply_repo(settings)
    click.echo(f"feast: repo ready at {settings.feast_dir} ({settings.feast.online_store} online store)")


@cli.command()
@click.pass_context
def down(ctx: click.Context) -> None:
    """Stop the local broker (its data stays in the data directory)."""
    from sightline.stack import LocalKafka

    settings = get_settings(ctx)
    stopped = LocalKafka(settings).stop()
    click.echo("kafka: broker stopped" if stopped else "kafka: broker was not running")


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Report the broker, the topics (partitions, retention) and the Feast repo."""
    from sightline.stack import LocalKafka, project_topics

    settings = get_settings(ctx)
    healthy = True
    if settings.kafka.bootstrap:
        bootstrap = settings.kafka.bootstrap
        click.echo(f"kafka:  external cluster {bootstrap}")
    else:
        kafka = LocalKafka(settings)
        if kafka.running():
            bootstrap = kafka.bootstrap
            click.echo(f"kafka:  running at {bootstrap} (pid {kafka.pid()}, data {kafka.home})")
        else:
            click.echo(f"kafka:  not running (data {kafka.home}); start it with 'sightline stack up'")
            bootstrap, healthy = None, False
    if bootstrap:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            existing = {t["name"]: t for t in admin.describe_topics()}
        finally:
            admin.close()
        for spec in project_topics(settings):
            topic = existing.get(spec.name)
            if topic:
                click.echo(f"  topic {spec.name:<34} {len(topic['partitions'])} partitions, retention {spec.retention_ms // 3_600_000} h")
            else:
                click.echo(f"  topic {spec.name:<34} MISSING (run 'sightline stack up')")
                healthy = False
    repo = settings.feast_dir
    if (repo / "registry.db").exists():
        from features import open_store

        views = sorted(v.name for v in open_store(settings).list_feature_views())
        click.echo(f"feast:  repo {repo} ({settings.feast.online_store} online store): {', '.join(views)}")
    else:
        click.echo(f"feast:  repo {repo} not applied; run 'sightline stack up'")
        healthy = False
    ctx.exit(0 if healthy else 1)
