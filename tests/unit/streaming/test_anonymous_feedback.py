"""Feedback from requests without personalization consent carries no user id (serving
strips it); it must still be accepted, while personalized events must name their user."""

import time

import pytest

from proto import events_pb2 as pb
from streaming import InvalidMessage, decode


def _feedback(user_id: str, personalization: bool) -> bytes:
    return pb.FeedbackEvent(
        event_id="f1", event_time_ms=int(time.time() * 1000), user_id=user_id, type=pb.IMPRESSION, item_id="cr1",
        consent=pb.Consent(context=True, personalization=personalization, measurement=True),
    ).SerializeToString()


def _decode(kind, value):
    return decode(kind, value, None, max_bytes=65_536, now_ms=int(time.time() * 1000))


def test_feedback_without_user_is_accepted_without_personalization():
    message = _decode("feedback", _feedback("", personalization=False))
    assert message.user_id == "" and message.item_id == "cr1"


def test_personalized_feedback_must_name_its_user():
    with pytest.raises(InvalidMessage, match="without user_id"):
        _decode("feedback", _feedback("", personalization=True))
