"""The ground-truth response model: true P(click) and P(conversion | click).

    logit P(click) = base + kind_offset[kind] + device_offset[device] + evening·[18 <= hour < 23]
                   + user_bias[u]
                   + w_interest · interest[u, c] + w_brand · brand_affinity[u, b]
                   + w_intent · [intent category == c] + w_intent_top · [same top, other leaf]
                   + w_object · [a detected object is c] + w_object_top · [an object in c's top]
                   + w_scene · scene_relevance[scene, c] / 4
                   + w_intent_brand · [intent names the item's brand]
                   + w_quality · quality[i]
                   - w_price · sensitivity[u] · max(0, price_level[i] - preferred_level[u])
                   - w_cap · [price > spoken cap] + w_price_word · word · (price_level[i] - 0.5)
                   - position_decay · log(1 + position)
                   - fatigue · log(1 + prior exposures of the user to the campaign/item)
                   + ε,  ε ~ N(0, noise_sd²) per impression

    logit P(conversion | click) = conv_base + conv_interest · interest[u, c]
                   + conv_intent · [intent category == c] + conv_quality · quality[i]
                   - conv_price · sensitivity[u] · max(0, price_level[i] - preferred_level[u])
                   - conv_cap · [price > spoken cap]

Every term except the user's latent tastes and ε is observable by a model (ids,
categories, scene, objects, intent, hour, device, price, position, exposure history),
and the latent tastes show through the user's engagement and context history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation._context import ContextBatch
from simulation._world import World


@dataclass(frozen=True)
class ResponseModel:
    """Coefficients of the ground truth (see the module docstring for the formula)."""

    base: float = -4.3
    ad_offset: float = -0.2               # ads are clicked a little less than shopping suggestions
    glasses_offset: float = 0.15
    evening: float = 0.2
    w_interest: float = 0.4
    w_brand: float = 0.3
    w_intent: float = 1.2
    w_intent_top: float = 0.6
    w_object: float = 0.7
    w_object_top: float = 0.3
    w_scene: float = 0.8
    w_intent_brand: float = 0.8
    w_quality: float = 0.6
    w_price: float = 0.7
    w_cap: float = 1.0
    w_price_word: float = 0.8
    position_decay: float = 0.6
    fatigue: float = 0.3
    noise_sd: float = 0.2
    conv_base: float = -3.0
    conv_interest: float = 0.5
    conv_intent: float = 0.8
    conv_quality: float = 0.4
    conv_price: float = 1.2
    conv_cap: float = 1.5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Relevance:
    """The per-impression terms the model is built from (useful for tests and docs)."""

    intent_match: np.ndarray
    intent_top: np.ndarray
    object_match: np.ndarray
    object_top: np.ndarray
    scene: np.ndarray
    intent_brand: np.ndarray
    over_cap: np.ndarray
    price_word: np.ndarray
    interest: np.ndarray
    brand: np.ndarray
    over_price: np.ndarray


def relevance(world: World, ctx: ContextBatch, req: np.ndarray, item: np.ndarray) -> Relevance:
    """Context and taste terms for impressions (request ``req[k]`` showing item ``item[k]``)."""
    items, lat = world.items, world.latent
    cat = items.category[item]
    top = world.category_top
    u = ctx.user[req]
    ic = ctx.intent_category[req]
    intent_match = ic == cat
    intent_top = (ic >= 0) & ~intent_match & (top[np.maximum(ic, 0)] == top[cat])
    obj = ctx.objects[req]                                          # (m, MAX_OBJECTS)
    obj_cat = np.where(obj >= 0, world.object_category[np.maximum(obj, 0)], -1)
    object_match = (obj_cat == cat[:, None]).any(axis=1)
    object_top = ((obj_cat >= 0) & (top[np.maximum(obj_cat, 0)] == top[cat][:, None])).any(axis=1) & ~object_match
    scene = world.scene_category[ctx.scene[req], cat] / 4.0
    intent_brand = (ctx.intent_brand[req] >= 0) & (ctx.intent_brand[req] == items.brand[item])
    cap = ctx.intent_price_cap[req]
    over_cap = items.price[item] > np.nan_to_num(cap, nan=np.inf)
    price_word = ctx.intent_price_word[req] * (items.price_level[item] - 0.5)
    interest = lat.user_interest[u, cat]
    brand = lat.user_brand[u, items.brand[item]]
    over_price = lat.user_price_sensitivity[u] * np.maximum(0.0, items.price_level[item] - lat.user_price_level[u])
    return Relevance(intent_match, intent_top, object_match, object_top, scene, intent_brand, over_cap,
                     price_word, interest, brand, over_price)


def true_probabilities(
    world: World,
    ctx: ContextBatch,
    req: np.ndarray,
    item: np.ndarray,
    position: np.ndarray,
    prior_exposures: np.ndarray | None = None,
    *,
    model: ResponseModel = ResponseModel(),
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """True (P(click), P(conversion | click)) of each impression.

    ``req`` indexes ``ctx``, ``item`` indexes ``world.items``; ``position`` is the
    0-based slot in the item's surface; ``prior_exposures`` counts earlier impressions
    of the same campaign (ads) or product (suggestions) to the same user. ``rng``
    draws the per-impression noise ε (none when ``None``).
    """
    m = model
    req = np.asarray(req)
    item = np.asarray(item)
    r = relevance(world, ctx, req, item)
    kind = world.items.kind[item]
    exposures = np.zeros(len(item)) if prior_exposures is None else np.asarray(prior_exposures, dtype=np.float64)
    logit = (
        m.base + np.where(kind == 0, m.ad_offset, 0.0)
        + np.where(ctx.device[req] == 0, m.glasses_offset, 0.0)
        + np.where((ctx.local_hour[req] >= 18) & (ctx.local_hour[req] < 23), m.evening, 0.0)
        + world.latent.user_bias[ctx.user[req]]
        + m.w_interest * r.interest + m.w_brand * r.brand
        + m.w_intent * r.intent_match + m.w_intent_top * r.intent_top
        + m.w_object * r.object_match + m.w_object_top * r.object_top
        + m.w_scene * r.scene + m.w_intent_brand * r.intent_brand
        + m.w_quality * world.items.quality[item]
        - m.w_price * r.over_price - m.w_cap * r.over_cap + m.w_price_word * r.price_word
        - m.position_decay * np.log1p(np.asarray(position, dtype=np.float64))
        - m.fatigue * np.log1p(exposures)
    )
    if rng is not None and m.noise_sd > 0:
        logit = logit + rng.normal(0.0, m.noise_sd, len(logit))
    conv = (
        m.conv_base + m.conv_interest * r.interest + m.conv_intent * r.intent_match
        + m.conv_quality * world.items.quality[item] - m.conv_price * r.over_price - m.conv_cap * r.over_cap
    )
    return _sigmoid(logit), _sigmoid(conv)
