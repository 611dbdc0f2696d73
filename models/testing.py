"""A small synthetic impression log with known click/conversion probabilities, for tests.

It mirrors the columns of the simulator's logged impressions (the feedback event-log
context columns, item attributes, ``click``/``conversion`` labels and the true
``p_click``/``p_conversion``) so that model code and tests do not depend on the full
``simulation`` package. Not used by any production path.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

_SCENES = ("grocery_store", "gym", "kitchen", "office", "street", "home", "cafe", "park")
_LOCATIONS = ("retail", "home", "transit", "work", "outdoor")
_TOPS = ("grocery", "sports", "fashion", "electronics", "home", "kitchen", "travel", "books_media")
_OBJECTS = tuple(f"obj_{i}" for i in range(40))


def synthetic_impressions(n: int = 20_000, *, seed: int = 0, n_users: int = 500, n_items: int = 300,
                          days: float = 3.0, start: datetime | None = None):
    """``n`` logged impressions (polars DataFrame, time-ordered) from a fixed random world."""
    import polars as pl

    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 1, tzinfo=timezone.utc)
    n_adv = max(n_items // 10, 3)
    item_top = rng.integers(0, len(_TOPS), n_items)
    item_leaf = rng.integers(0, 4, n_items)
    item_adv = rng.integers(0, n_adv, n_items)
    item_quality = rng.normal(0, 0.6, n_items)
    item_price = np.round(np.exp(rng.normal(3.0, 0.8, n_items)), 2)
    item_brand = rng.integers(0, 60, n_items)
    scene_aff = rng.normal(0, 1.0, (len(_SCENES), len(_TOPS)))
    obj_top = rng.integers(0, len(_TOPS), len(_OBJECTS))
    user_top = rng.integers(0, len(_TOPS), n_users)
    user_consent = rng.random(n_users) < 0.6
    user_device = rng.random(n_users) < 0.4

    users = rng.integers(0, n_users, n)
    items = rng.integers(0, n_items, n)
    scenes = rng.integers(0, len(_SCENES), n)
    locs = rng.integers(0, len(_LOCATIONS), n)
    hours = rng.integers(0, 24, n)
    intent_top = np.where(rng.random(n) < 0.5, item_top[items], rng.integers(0, len(_TOPS), n))
    has_intent = rng.random(n) < 0.7
    n_obj = rng.integers(0, 4, n)
    objects = [[_OBJECTS[j] for j in rng.integers(0, len(_OBJECTS), k)] for k in n_obj]
    obj_match = np.array([sum(obj_top[int(o[4:])] == item_top[it] for o in objs) for objs, it in zip(objects, items)])
    secs = np.sort(rng.uniform(0, days * 86400, n))

    top = item_top[items]
    logit = (-3.3 + item_quality[items] + 0.8 * scene_aff[scenes, top] + 1.2 * (has_intent & (intent_top == top))
             + 0.5 * obj_match + 0.9 * (user_consent[users] & (user_top[users] == top)) * 1.0
             + 0.3 * user_device[users] - 0.2 * np.log1p(item_price[items] / 50) + 0.2 * np.sin(hours / 24 * 2 * np.pi))
    p_click = 1 / (1 + np.exp(-logit))
    p_conv = 1 / (1 + np.exp(-(-1.8 + 0.5 * item_quality[items] - 0.4 * np.log1p(item_price[items] / 50))))
    click = rng.random(n) < p_click
    conv = click & (rng.random(n) < p_conv)
    times = [start + timedelta(seconds=float(s)) for s in secs]
    click_delay = rng.exponential(20.0, n)
    conv_delay = click_delay + rng.exponential(600.0, n)

    leaf = [f"{_TOPS[t]}/leaf{l}" for t, l in zip(top, item_leaf[items])]
    return pl.DataFrame({
        "event_id": [f"imp-{seed}-{i}" for i in range(n)],
        "event_time": times,
        "request_id": [f"req-{seed}-{i}" for i in range(n)],
        "user_id": [f"u{u}" for u in users],
        "item_kind": ["ad" if a % 2 == 0 else "product" for a in item_adv[items]],
        "item_id": [f"i{i}" for i in items],
        "campaign_id": [f"c{i // 2}" for i in items],
        "advertiser_id": [f"a{a}" for a in item_adv[items]],
        "category": leaf,
        "brand": [f"b{b}" for b in item_brand[items]],
        "price": item_price[items],
        "position": rng.integers(0, 5, n).astype(np.int32),
        "device": np.where(user_device[users], "glasses", "phone"),
        "scene": [_SCENES[s] for s in scenes],
        "objects": objects,
        "intent_text": [f"i need some {_TOPS[t].replace('_', ' ')} things" if h else "" for t, h in zip(intent_top, has_intent)],
        "location_category": [_LOCATIONS[x] for x in locs],
        "region": ["DE-BE"] * n,
        "local_hour": hours.astype(np.int32),
        "local_weekday": ((secs // 86400) % 7).astype(np.int32),
        "consent_personalization": user_consent[users],
        "click": click.astype(np.int8),
        "conversion": conv.astype(np.int8),
        "click_time": [t + timedelta(seconds=float(d)) if c else None for t, d, c in zip(times, click_delay, click)],
        "conversion_time": [t + timedelta(seconds=float(d)) if c else None for t, d, c in zip(times, conv_delay, conv)],
        "p_click": p_click,
        "p_conversion": p_conv,
    }).with_columns(pl.col("event_time", "click_time", "conversion_time").cast(pl.Datetime("us", "UTC")))
