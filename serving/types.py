"""The small interfaces serving's request path depends on (real and fake backends plug in)."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence, runtime_checkable


@runtime_checkable
class Ranker(Protocol):
    """Scores every candidate of one request in ONE call.

    ``rows`` are plain dicts: the request context (scene, objects, intent_text,
    intent_category, location_category, region, local_hour, local_weekday, device,
    user_id, consent_personalization, user_* counts) merged with the candidate's
    attributes (item_id, item_kind "ad"|"product", advertiser_id, campaign_id, category,
    brand, price, item_* and campaign_* statistics, relevance). Returns one click
    probability per row.
    """

    version: str

    def score(self, rows: Sequence[Mapping]) -> Sequence[float]: ...


class RankerSource(Protocol):
    """Resolves a model alias or version (``production``, ``xgboost``, ``torchrec@3``) to a ranker."""

    def get(self, ref: str) -> Ranker: ...


class EventSink(Protocol):
    """Where serving's events go (``KafkaEventLog`` in production, ``MemoryEventLog`` in tests)."""

    def send(self, topic: str, message) -> None: ...
    def send_many(self, topic: str, messages) -> None: ...
    def start(self): ...
    def close(self, timeout: float = 10.0) -> None: ...


class FrequencyStore(Protocol):
    """Impressions per (pseudonymized user, campaign, UTC day) behind the frequency caps
    (``serving._caps``: in-process; ``_caps_sqlite``: one file per machine; ``_caps_redis``:
    shared by every server). Failures raise ``serving.errors.Unavailable``."""

    kind: str

    def allowed_many(self, user: str, asks: Sequence[tuple[str, int | None, int | None]], day: int) -> list[bool]:
        """For each ``(campaign_id, per_day, per_week)``: may one more impression be served today?"""
        ...

    def record_many(self, user: str, campaign_ids: Sequence[str], day: int) -> None:
        """Count one impression today for each entry (a reply's served ads, in one write)."""
        ...

    def counts(self, user: str, campaign_id: str, day: int) -> tuple[int, int]:
        """(impressions today, impressions in the 7 days ending today)."""
        ...

    def erase_user(self, user: str) -> int:
        """Forget the user's counts; returns how many campaign entries went."""
        ...

    def users(self) -> int: ...
    def close(self) -> None: ...


class SnapshotSource(Protocol):
    """The campaign snapshot (``campaigns.SnapshotCache``): ``get()`` → ``CampaignSnapshot``."""

    def get(self): ...
