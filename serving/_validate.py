"""Request validation: every rule names the bad field (``InvalidRequest.field``) and the fix."""

from __future__ import annotations

import math
import re

from proto import events_pb2
from serving.errors import ConsentDenied, InvalidRequest

MAX_AD_SLOTS = 10
MAX_SUGGESTIONS = 50
MAX_OBJECTS = 32
MAX_TOKEN = 64
MAX_INTENT = 1000
MAX_ID = 128

_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_REGION = re.compile(r"^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$")
_ID = re.compile(r"^[\x21-\x7e]+$")


def _id(value: str, field: str, *, required: bool) -> None:
    if not value:
        if required:
            raise InvalidRequest(f"{field} is empty; set it", field=field)
        return
    if len(value) > MAX_ID or not _ID.match(value):
        raise InvalidRequest(f"{field} must be 1-{MAX_ID} printable ASCII characters without spaces", field=field)


def _token(value: str, field: str) -> None:
    if value and (len(value) > MAX_TOKEN or not _TOKEN.match(value.lower())):
        raise InvalidRequest(f"{field} {value[:40]!r} must be a lower-case label of letters, digits, '_' or '-' "
                             f"(at most {MAX_TOKEN} characters), e.g. 'grocery_store'", field=field)


def validate_recommend(request) -> None:
    """Raise ``InvalidRequest`` (or ``ConsentDenied``) for the first bad field of a RecommendRequest."""
    _id(request.app_id, "app_id", required=True)
    _id(request.request_id, "request_id", required=False)
    if not request.HasField("consent") or not request.consent.context:
        raise ConsentDenied("consent.context is false: the user has not allowed the assistant's context to be used, "
                            "so Sightline cannot recommend anything; do not call Recommend without it",
                            field="consent.context")
    _id(request.user_id, "user_id", required=request.consent.personalization)
    ctx = request.context
    if ctx.device not in events_pb2.Device.values():
        raise InvalidRequest(f"context.device {ctx.device} is not a known Device; use "
                             f"{', '.join(events_pb2.Device.keys())}", field="context.device")
    _token(ctx.scene, "context.scene")
    _token(ctx.location_category, "context.location_category")
    if len(ctx.objects) > MAX_OBJECTS:
        raise InvalidRequest(f"context.objects has {len(ctx.objects)} labels; send at most {MAX_OBJECTS}",
                             field="context.objects")
    for i, label in enumerate(ctx.objects):
        _token(label, f"context.objects[{i}]")
    if len(ctx.intent_text) > MAX_INTENT:
        raise InvalidRequest(f"context.intent_text has {len(ctx.intent_text)} characters; send at most {MAX_INTENT}",
                             field="context.intent_text")
    if ctx.region and not _REGION.match(ctx.region):
        raise InvalidRequest(f"context.region {ctx.region[:20]!r} is not a coarse ISO 3166 code like 'DE' or 'DE-BE'",
                             field="context.region")
    if not 0 <= ctx.local_hour <= 23:
        raise InvalidRequest(f"context.local_hour is {ctx.local_hour}; use 0..23", field="context.local_hour")
    if not 0 <= ctx.local_weekday <= 6:
        raise InvalidRequest(f"context.local_weekday is {ctx.local_weekday}; use 0 (Monday)..6 (Sunday)",
                             field="context.local_weekday")
    s = request.surfaces
    if not 0 <= s.ad_slots <= MAX_AD_SLOTS:
        raise InvalidRequest(f"surfaces.ad_slots is {s.ad_slots}; use 0..{MAX_AD_SLOTS}", field="surfaces.ad_slots")
    if not 0 <= s.suggestions <= MAX_SUGGESTIONS:
        raise InvalidRequest(f"surfaces.suggestions is {s.suggestions}; use 0..{MAX_SUGGESTIONS}",
                             field="surfaces.suggestions")
    if s.ad_slots == 0 and s.suggestions == 0:
        raise InvalidRequest("surfaces asks for nothing; set surfaces.ad_slots and/or surfaces.suggestions",
                             field="surfaces")


def validate_feedback(request, now_ms: int) -> None:
    if request.type not in (events_pb2.IMPRESSION, events_pb2.CLICK, events_pb2.CONVERSION):
        raise InvalidRequest(f"type {request.type} is not IMPRESSION, CLICK or CONVERSION", field="type")
    if not request.impression_token:
        raise InvalidRequest("impression_token is empty; send the token of the served item", field="impression_token")
    if request.event_time_ms < 0 or request.event_time_ms > now_ms + 24 * 3_600_000:
        raise InvalidRequest("event_time_ms must be epoch milliseconds, not in the future (0 = now)", field="event_time_ms")
    value = request.conversion_value
    if not math.isfinite(value) or value < 0:
        raise InvalidRequest("conversion_value must be a finite, non-negative amount", field="conversion_value")
    if value and request.type != events_pb2.CONVERSION:
        raise InvalidRequest("conversion_value is only for CONVERSION feedback", field="conversion_value")
