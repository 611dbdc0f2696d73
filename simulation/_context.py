"""Sampling what the assistant sees and hears: one row per request, vectorised.

A request's *focus* category is drawn from the user's interests weighted by the
scene's relevance; the spoken intent (if any) is about the focus, the first detected
object is often the focus's object, the others come from the scene. So intent,
objects and scene are noisy observations of the latent focus — which is what the
ground truth rewards an item for matching.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timezone

import numpy as np

from simulation import _vocab as V
from simulation._world import World

MAX_OBJECTS = 4
NO = -1


@dataclass(frozen=True)
class ContextBatch:
    """n requests' contexts as parallel numpy arrays (index = request)."""

    user: np.ndarray               # int32 user index
    event_time_ms: np.ndarray      # int64 UTC epoch milliseconds
    device: np.ndarray             # int8: 0 glasses, 1 phone
    scene: np.ndarray              # int16 index into world.scenes
    objects: np.ndarray            # int32 (n, MAX_OBJECTS) index into world.object_vocab, -1 padding
    focus: np.ndarray              # int32 latent focus category (not observable)
    intent_category: np.ndarray    # int32 category of the spoken intent, -1 none (or sensitive)
    intent_sensitive: np.ndarray   # int32 index into world.sensitive_categories, -1 none
    intent_brand: np.ndarray       # int32 brand named in the intent, -1 none
    intent_price_cap: np.ndarray   # float64 "under X euros", NaN none
    intent_price_word: np.ndarray  # int8: -1 cheap words, +1 premium words, 0 none
    intent_text: np.ndarray        # object (str), "" when nothing was said
    region: np.ndarray             # object (str)
    local_hour: np.ndarray         # int8 0..23
    local_weekday: np.ndarray      # int8 0 = Monday
    consent_context: np.ndarray    # bool
    consent_personalization: np.ndarray  # bool
    consent_measurement: np.ndarray      # bool

    def __len__(self) -> int:
        return len(self.user)

    def take(self, idx: np.ndarray) -> "ContextBatch":
        """The requests at ``idx`` (a fancy-index of every array)."""
        return ContextBatch(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    def with_consent(self, context: np.ndarray, personalization: np.ndarray, measurement: np.ndarray) -> "ContextBatch":
        return replace(self, consent_context=context, consent_personalization=personalization,
                       consent_measurement=measurement)

    def location_category(self, world: World) -> np.ndarray:
        loc = np.array([s.location_category for s in V.SCENES], dtype=object)
        return loc[self.scene]

    def object_labels(self, world: World, i: int, *, include_sensitive: bool = True) -> list[str]:
        """Object labels of request ``i`` (optionally without the sensitive ones)."""
        vocab = world.object_vocab
        return [vocab[o] for o in self.objects[i] if o >= 0 and (include_sensitive or not world.object_sensitive[o])]


def _sample_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a non-negative weight matrix."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum < u[:, None]).sum(axis=1), weights.shape[1] - 1)


def _sample_by_group(table: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per element from ``table[group[k]]`` (few distinct rows: binary search)."""
    cdf = np.cumsum(table, axis=1)
    u = rng.random(len(group))
    out = np.empty(len(group), dtype=np.int64)
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        out[idx] = np.searchsorted(cdf[g], u[idx] * cdf[g, -1], side="right")
    return np.minimum(out, table.shape[1] - 1)


def _nice_cap(x: np.ndarray) -> np.ndarray:
    step = np.where(x < 20, 5, np.where(x < 100, 10, np.where(x < 500, 50, 100)))
    return np.maximum(step, np.round(x / step) * step).astype(np.float64)


def sample_contexts(
    world: World,
    n: int,
    seed: int,
    start_time: datetime | None = None,
    days: float = 1.0,
    *,
    users: np.ndarray | None = None,
    intent_rate: float = 0.55,
    sensitive_rate: float = 0.02,
    chunk: int = 20_000,
) -> ContextBatch:
    """Sample ``n`` request contexts over ``days`` from ``start_time`` (sorted by time).

    ``users`` (optional) fixes who makes each request; by default users are drawn in
    proportion to their activity. ``sensitive_rate`` is the share of requests with a
    sensitive intent or object, which downstream stages must recognise and drop.
    """
    rng = np.random.default_rng([seed, 101])
    lat = world.latent
    start = start_time or datetime(world.config.start_date.year, world.config.start_date.month,
                                   world.config.start_date.day, tzinfo=timezone.utc)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    start_ms = int(start.timestamp() * 1000)
    if users is None:
        p = lat.user_activity / lat.user_activity.sum()
        users = rng.choice(world.n_users, n, p=p)
    users = np.asarray(users, dtype=np.int32)
    n = len(users)

    # time: local hour from the overall diurnal profile, then back to UTC via the user's offset
    n_days = max(days, 1e-9)
    offset_h = world.users["utc_offset_h"].to_numpy()[users]
    day = np.floor(rng.random(n) * np.ceil(n_days)).astype(np.int64)
    diurnal = world.scene_hour.mean(axis=(0, 2))
    local_hour = rng.choice(24, n, p=diurnal / diurnal.sum()).astype(np.int64)
    within = rng.random(n) * 3_600_000
    t_ms = start_ms + day * 86_400_000 + (local_hour - offset_h) * 3_600_000 + within.astype(np.int64)
    span_ms = int(n_days * 86_400_000)
    t_ms = start_ms + np.mod(t_ms - start_ms, span_ms)
    local = t_ms + offset_h.astype(np.int64) * 3_600_000
    local_hour = ((local // 3_600_000) % 24).astype(np.int8)
    # 1970-01-01 was a Thursday (weekday 3)
    weekday = (((local // 86_400_000) + 3) % 7).astype(np.int8)
    weekend = (weekday >= 5).astype(np.int64)

    # scene: the user's habits × how likely the scene is at that hour
    scene = np.empty(n, dtype=np.int16)
    focus = np.empty(n, dtype=np.int32)
    rel = world.scene_category
    for lo in range(0, n, chunk):
        sl = slice(lo, min(n, lo + chunk))
        w = lat.user_scene_pref[users[sl]] * world.scene_hour[:, local_hour[sl], weekend[sl]].T
        s = _sample_rows(w, rng)
        scene[sl] = s
        fw = np.exp(lat.user_interest[users[sl]]) * (0.15 + rel[s])
        focus[sl] = _sample_rows(fw, rng)
    scene_objects = 0.02 + rel
    second = np.stack([_sample_by_group(scene_objects, scene, rng), _sample_by_group(scene_objects, scene, rng)], axis=1)

    # objects: focus object (often), scene objects, a generic object, rarely a sensitive one
    n_cat = len(world.categories)
    objects = np.full((n, MAX_OBJECTS), NO, dtype=np.int32)
    # leaf objects come first in the vocabulary: object index == category index
    objects[:, 0] = np.where(rng.random(n) < 0.6, focus, NO)
    objects[:, 1] = np.where(rng.random(n) < 0.5, second[:, 0], NO)
    objects[:, 2] = np.where(rng.random(n) < 0.3, second[:, 1], NO)
    generic = np.flatnonzero((world.object_category < 0) & ~world.object_sensitive)
    sens_obj = np.flatnonzero(world.object_sensitive)
    objects[:, 3] = np.where(rng.random(n) < 0.5, generic[rng.integers(0, len(generic), n)], NO)
    is_sens = rng.random(n) < sensitive_rate
    sens_is_object = is_sens & (rng.random(n) < 0.5)
    objects[sens_is_object, 2] = sens_obj[rng.integers(0, len(sens_obj), int(sens_is_object.sum()))]

    # intents
    device = (world.users["device"].to_numpy()[users] == "phone").astype(np.int8)
    speaks = rng.random(n) < np.where(device == 0, intent_rate + 0.05, intent_rate - 0.05)
    sens_intent = is_sens & ~sens_is_object
    intent_category = np.where(speaks & ~sens_intent, focus, NO).astype(np.int32)
    n_sens = len(world.sensitive_categories)
    intent_sensitive = np.where(sens_intent, rng.integers(0, n_sens, n), NO).astype(np.int32)
    template = rng.integers(0, len(V.INTENT_TEMPLATES), n)
    uses_brand = np.array([t[1] for t in V.INTENT_TEMPLATES])[template]
    price_kind = np.array([t[2] for t in V.INTENT_TEMPLATES])[template]
    # a brand that sells in the focus category (via a random product of that category)
    order, starts, counts = world.items_of_category(1)
    has = counts[focus] > 0
    pick = order[starts[focus] + (rng.random(n) * np.maximum(counts[focus], 1)).astype(np.int64)]
    brand = np.where(has, world.items.brand[pick], rng.integers(0, len(world.brands), n))
    intent_brand = np.where((intent_category >= 0) & uses_brand, brand, NO).astype(np.int32)
    median_price = np.array([np.median(world.items.price[order[starts[c]:starts[c] + counts[c]]]) if counts[c] else 30.0
                             for c in range(n_cat)])
    cap = _nice_cap(median_price[focus] * rng.uniform(0.6, 1.6, n))
    intent_price_cap = np.where((intent_category >= 0) & (price_kind == "cap"), cap, np.nan)
    intent_price_word = np.where(intent_category < 0, 0,
                                 np.where(price_kind == "cheap", -1, np.where(price_kind == "premium", 1, 0))).astype(np.int8)
    texts = _intent_texts(world, intent_category, intent_sensitive, template, intent_brand, intent_price_cap, rng)

    order_t = np.argsort(t_ms, kind="stable")
    u = world.users
    batch = ContextBatch(
        user=users, event_time_ms=t_ms.astype(np.int64), device=device, scene=scene, objects=objects, focus=focus,
        intent_category=intent_category, intent_sensitive=intent_sensitive, intent_brand=intent_brand,
        intent_price_cap=intent_price_cap, intent_price_word=intent_price_word, intent_text=texts,
        region=u["region"].to_numpy()[users].astype(object), local_hour=local_hour, local_weekday=weekday,
        consent_context=u["consent_context"].to_numpy()[users],
        consent_personalization=u["consent_personalization"].to_numpy()[users],
        consent_measurement=u["consent_measurement"].to_numpy()[users],
    )
    return batch.take(order_t)


def _intent_texts(world, intent_category, intent_sensitive, template, intent_brand, cap, rng) -> np.ndarray:
    labels = [world.taxonomy.get(c).label for c in world.categories]
    sens_labels = [world.taxonomy.get(c).label for c in world.sensitive_categories]
    cheap = rng.integers(0, len(V.CHEAP_WORDS), len(template))
    premium = rng.integers(0, len(V.PREMIUM_WORDS), len(template))
    sens_t = rng.integers(0, len(V.SENSITIVE_INTENT_TEMPLATES), len(template))
    out = np.full(len(template), "", dtype=object)
    for i in np.flatnonzero((intent_category >= 0) | (intent_sensitive >= 0)):
        if intent_sensitive[i] >= 0:
            out[i] = V.SENSITIVE_INTENT_TEMPLATES[sens_t[i]].format(label=sens_labels[intent_sensitive[i]])
            continue
        text, uses_brand, _ = V.INTENT_TEMPLATES[template[i]]
        out[i] = text.format(
            label=labels[intent_category[i]],
            brand=world.brands[intent_brand[i]] if intent_brand[i] >= 0 else "",
            price=f"{cap[i]:.0f}" if cap[i] == cap[i] else "",
            cheap=V.CHEAP_WORDS[cheap[i]], premium=V.PREMIUM_WORDS[premium[i]],
        ).replace("  ", " ")
    return out
