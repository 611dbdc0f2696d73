"""Request validation never crashes on hostile input: it accepts or names a field."""

from hypothesis import given, settings, strategies as st

from proto import events_pb2, serving_pb2
from serving._validate import validate_feedback, validate_recommend
from serving.errors import ServingError

_text = st.text(max_size=80)


@settings(max_examples=300, deadline=None)
@given(app=_text, user=_text, rid=_text, ctx=st.booleans(), pers=st.booleans(), device=st.integers(-5, 10),
       scene=_text, objects=st.lists(_text, max_size=40), intent=st.text(max_size=1200), region=_text,
       hour=st.integers(-100, 100), weekday=st.integers(-10, 10), ads=st.integers(-5, 20), sugg=st.integers(-5, 80))
def test_recommend_validation_accepts_or_names_the_field(app, user, rid, ctx, pers, device, scene, objects, intent,
                                                          region, hour, weekday, ads, sugg):
    request = serving_pb2.RecommendRequest(
        app_id=app, user_id=user, request_id=rid, consent=events_pb2.Consent(context=ctx, personalization=pers),
        context=events_pb2.Context(device=device, scene=scene, objects=objects, intent_text=intent, region=region,
                                   local_hour=hour, local_weekday=weekday),
        surfaces=serving_pb2.Surfaces(ad_slots=ads, suggestions=sugg))
    try:
        validate_recommend(request)
    except ServingError as exc:
        assert exc.field and exc.code in ("INVALID_ARGUMENT", "PERMISSION_DENIED")


@settings(max_examples=200, deadline=None)
@given(kind=st.integers(-3, 8), token=_text, t=st.integers(-10**15, 10**15),
       value=st.floats(allow_nan=True, allow_infinity=True))
def test_feedback_validation_accepts_or_names_the_field(kind, token, t, value):
    try:
        validate_feedback(serving_pb2.FeedbackRequest(type=kind, impression_token=token, event_time_ms=t,
                                                      conversion_value=value), 1_800_000_000_000)
    except ServingError as exc:
        assert exc.field and exc.code == "INVALID_ARGUMENT"
