"""Seeded synthetic events for tests and the ingest benchmark (until ``simulation/`` lands).

Not a world model: just protobuf events with the shapes the simulator will produce
(scenes, object labels and spoken intents built from taxonomy leaves, consent
profiles 70% all / 20% context only / 10% none) and the ground-truth intent category
of each generated sentence, for measuring intent matchers.
"""

from __future__ import annotations

import random
import uuid

from proto import events_pb2 as pb

SCENES = ("grocery_store", "gym", "kitchen", "street", "cafe", "office", "store_aisle", "living_room", "park", "train")
_TEMPLATES = ("I need {x} under {p} euros", "looking for {x}", "where can I buy {x}", "show me cheap {x}",
              "any good deals on {x} nearby", "I want to get {x} for the weekend", "recommend some {x}",
              "do they sell {x} here")
_SENSITIVE_INTENTS = ("where is the nearest pharmacy", "find a church near me", "I need pregnancy test",
                      "dating apps for tonight", "vote in the election")


def intent_sentence(rng: random.Random, label: str) -> str:
    return rng.choice(_TEMPLATES).format(x=label, p=rng.choice((20, 50, 100, 250)))


class SyntheticEvents:
    """Deterministic event factory: ``context()``, ``feedback()``, ``consent()``, ``exposure()``."""

    def __init__(self, seed: int = 7, users: int = 200, items: int = 50, campaigns: int = 10,
                 consent_mix: tuple[float, float, float] = (0.7, 0.2, 0.1), start_ms: int | None = None) -> None:
        from campaigns.taxonomy import Taxonomy

        self.rng = random.Random(seed)
        self.users = [f"u{i:05d}" for i in range(users)]
        self.leaves = Taxonomy().leaves()
        self.items = [(f"item{i:04d}", f"camp{i % campaigns:03d}", self.rng.choice(self.leaves).id) for i in range(items)]
        self.profiles: dict[str, pb.Consent] = {}
        for u in self.users:
            x = self.rng.random()
            if x < consent_mix[0]:
                self.profiles[u] = pb.Consent(context=True, personalization=True, measurement=True)
            elif x < consent_mix[0] + consent_mix[1]:
                self.profiles[u] = pb.Consent(context=True)
            else:
                self.profiles[u] = pb.Consent()
        self.now_ms = start_ms
        self._n = 0

    def _id(self) -> str:
        self._n += 1
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def _time(self, time_ms: int | None) -> int:
        if time_ms is not None:
            return time_ms
        import time

        return self.now_ms if self.now_ms is not None else int(time.time() * 1000)

    def context(self, user: str | None = None, time_ms: int | None = None, sensitive_rate: float = 0.05) -> pb.ContextEvent:
        rng = self.rng
        user = user or rng.choice(self.users)
        leaf = rng.choice(self.leaves)
        objects = [rng.choice(self.leaves).leaf.rstrip("s") for _ in range(rng.randint(0, 3))]
        intent = intent_sentence(rng, leaf.label) if rng.random() < 0.8 else ""
        if rng.random() < sensitive_rate:
            intent = rng.choice(_SENSITIVE_INTENTS)
        return pb.ContextEvent(
            event_id=self._id(), event_time_ms=self._time(time_ms), user_id=user, consent=self.profiles.get(user, pb.Consent()),
            context=pb.Context(device=rng.choice((pb.GLASSES, pb.PHONE)), scene=rng.choice(SCENES), objects=objects,
                               intent_text=intent, location_category=rng.choice(("retail", "home", "transit")),
                               region="DE-BE", local_hour=rng.randint(0, 23), local_weekday=rng.randint(0, 6)),
            app_id="app1")

    def feedback(self, user: str | None = None, time_ms: int | None = None, kind: int | None = None) -> pb.FeedbackEvent:
        rng = self.rng
        user = user or rng.choice(self.users)
        item, campaign, category = rng.choice(self.items)
        kind = kind or rng.choices((pb.IMPRESSION, pb.CLICK, pb.CONVERSION), weights=(85, 12, 3))[0]
        position = rng.randint(0, 4)
        return pb.FeedbackEvent(
            event_id=self._id(), event_time_ms=self._time(time_ms), user_id=user, consent=self.profiles.get(user, pb.Consent()),
            type=kind, impression_token=self._id(), request_id=self._id(), item_kind=pb.AD, item_id=item,
            campaign_id=campaign, advertiser_id="adv1", category=category, position=position,
            spend=0.002 if kind == pb.IMPRESSION else (0.4 if kind == pb.CLICK else 0.0),
            conversion_value=25.0 if kind == pb.CONVERSION else 0.0, model_version="m1", pctr=0.03,
            context=pb.Context(scene=rng.choice(SCENES), device=pb.GLASSES), experiment_arms={"exp1": "a"}, app_id="app1",
            serve_ms=4.0 + 0.25 * position if kind == pb.IMPRESSION else 0.0)   # as Recommend logs them

    def consent(self, user: str, consent: pb.Consent, time_ms: int | None = None) -> pb.ConsentEvent:
        self.profiles[user] = consent
        return pb.ConsentEvent(event_id=self._id(), event_time_ms=self._time(time_ms), user_id=user, consent=consent)

    def exposure(self, user: str | None = None, time_ms: int | None = None) -> pb.ExposureEvent:
        user = user or self.rng.choice(self.users)
        return pb.ExposureEvent(event_id=self._id(), event_time_ms=self._time(time_ms), user_id=user,
                                consent=self.profiles.get(user, pb.Consent()), experiment_id="exp1", layer="l1",
                                arm=self.rng.choice(("a", "b")), unit_type="user", unit_id=user, request_id=self._id())

    def labelled_intents(self, n: int) -> list[tuple[str, str]]:
        """``(sentence, true category id)`` pairs for intent-matcher accuracy."""
        out = []
        for _ in range(n):
            leaf = self.rng.choice(self.leaves)
            out.append((intent_sentence(self.rng, leaf.label), leaf.id))
        return out
