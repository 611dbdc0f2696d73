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
