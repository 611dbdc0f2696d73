"""The protobuf contracts round-trip and carry what every event must carry."""

from proto import events_pb2, serving_pb2


def test_every_event_carries_id_time_user_and_consent():
    for message in (events_pb2.ContextEvent, events_pb2.ConsentEvent, events_pb2.FeedbackEvent,
                    events_pb2.ExposureEvent):
        fields = set(message.DESCRIPTOR.fields_by_name)
        assert {"event_id", "event_time_ms", "user_id", "consent"} <= fields, message.DESCRIPTOR.name


def test_context_event_round_trips():
    event = events_pb2.ContextEvent(
        event_id="e1", event_time_ms=1_700_000_000_000, user_id="u1",
        consent=events_pb2.Consent(context=True, personalization=False, measurement=True),
        context=events_pb2.Context(device=events_pb2.GLASSES, scene="gym", objects=["dumbbell", "water_bottle"],
                                   intent_text="I need new running shoes", local_hour=7),
    )
    decoded = events_pb2.ContextEvent.FromString(event.SerializeToString())
    assert decoded == event
    assert list(decoded.context.objects) == ["dumbbell", "water_bottle"]
    assert decoded.consent.personalization is False


def test_feedback_event_carries_experiment_arms_and_context():
    event = events_pb2.FeedbackEvent(event_id="f1", type=events_pb2.CLICK, item_kind=events_pb2.AD,
                                     experiment_arms={"exp1": "treatment"}, spend=0.42)
    decoded = events_pb2.FeedbackEvent.FromString(event.SerializeToString())
    assert decoded.experiment_arms["exp1"] == "treatment"
    assert decoded.type == events_pb2.CLICK


def test_serving_contract_has_both_rpcs():
    service = serving_pb2.DESCRIPTOR.services_by_name["RecommendationService"]
    assert {m.name for m in service.methods} >= {"Recommend", "ReportFeedback"}
    assert serving_pb2.RecommendRequest.DESCRIPTOR.fields_by_name["surfaces"].message_type.name == "Surfaces"


def test_an_event_log_written_before_a_column_existed_still_reads(tmp_path):
    """``serve_ms`` joined the feedback log on 2026-12-05: older part files lack it and read as
    nulls beside the new ones, in the current schema."""
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    from features import append_events, event_log_dir, event_log_schema, read_events

    schema = event_log_schema("feedback")
    row = {name: None for name in schema.names}
    row.update(event_id="new", event_time=datetime(2026, 12, 5, tzinfo=timezone.utc), type="impression", serve_ms=4.5)
    append_events(tmp_path, "feedback", pa.Table.from_pylist([row], schema=schema))
    old_schema = pa.schema([f for f in schema if f.name != "serve_ms"])
    old = {k: v for k, v in row.items() if k != "serve_ms"} | {"event_id": "old"}
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), event_log_dir(tmp_path, "feedback") / "part-0-old.parquet")
    log = read_events(tmp_path, "feedback")
    assert log.columns == schema.names
    assert dict(zip(log["event_id"], log["serve_ms"])) == {"old": None, "new": 4.5}
