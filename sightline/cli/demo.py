"""`sightline demo`: the whole story on the embedded defaults, stage by stage."""

from __future__ import annotations

import time
import uuid

import click

from sightline.cli import get_settings


def _stage(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


@click.command()
@click.option("--events", default=300, show_default=True, help="Context events to send through Kafka.")
@click.pass_context
def cli(ctx: click.Context, events: int) -> None:
    """Bring the local stack up, send context events through Kafka and show them consumed."""
    from kafka import KafkaConsumer, KafkaProducer

    from features import apply_repo
    from proto import events_pb2
    from sightline.stack import LocalKafka, ensure_topics, project_topics

    settings = get_settings(ctx)
    _stage("1. local stack: Apache Kafka (KRaft) + Feast")
    bootstrap = settings.kafka.bootstrap or LocalKafka(settings).start()
    created = ensure_topics(bootstrap, project_topics(settings))
    apply_repo(settings)
    click.echo(f"broker {bootstrap}; topics ready ({len(created)} new); Feast repo {settings.feast_dir}")

    _stage(f"2. {events} consented context events -> {settings.topic('context')}")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    scenes = ["grocery_store", "gym", "kitchen", "street", "cafe", "office", "store_aisle"]
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    for i in range(events):
        event = events_pb2.ContextEvent(
            event_id=f"demo-{run}-{i}", event_time_ms=int(time.time() * 1000), user_id=f"demo-user-{i % 50}",
            consent=events_pb2.Consent(context=True, personalization=i % 10 < 7, measurement=True),
            context=events_pb2.Context(device=events_pb2.GLASSES if i % 2 else events_pb2.PHONE,
                                       scene=scenes[i % len(scenes)], local_hour=(8 + i) % 24),
        )
        producer.send(settings.topic("context"), key=event.user_id.encode(), value=event.SerializeToString())
    producer.flush()
    producer.close()
    click.echo(f"sent {events} events in {time.monotonic() - started:.2f}s (acks=all)")

    _stage("3. consumed back through a consumer group")
    consumer = KafkaConsumer(settings.topic("context"), bootstrap_servers=bootstrap, group_id=f"demo-{run}",
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=3000)
    mine, by_scene = 0, {}
    for message in consumer:
        event = events_pb2.ContextEvent.FromString(message.value)
        if event.event_id.startswith(f"demo-{run}-"):
            mine += 1
            by_scene[event.context.scene] = by_scene.get(event.context.scene, 0) + 1
    consumer.commit()
    consumer.close()
    click.echo(f"consumed {mine}/{events} of this run's events; by scene: {by_scene}")
    if mine != events:
        raise click.ClickException(f"only {mine} of {events} events came back; see {LocalKafka(settings).log_file}")
