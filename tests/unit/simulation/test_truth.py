"""The ground truth: monotone in relevance, position, fatigue and quality; Bayes AUC in range."""

from dataclasses import replace

import numpy as np
import pytest

from features import event_log_schema
from simulation import (
    ResponseModel, auc, bayes_metrics, log_loss, relevance, sample_contexts, simulate_logged_impressions,
    true_probabilities,
)


@pytest.fixture(scope="module")
def impressions(small_world):
    """Every request of a small batch paired with a few random items."""
    ctx = sample_contexts(small_world, 2_000, seed=9)
    rng = np.random.default_rng(0)
    req = np.repeat(np.arange(len(ctx)), 4)
    item = rng.integers(0, len(small_world.items), len(req))
    return ctx, req, item


def _p(world, ctx, req, item, pos=None, prior=None, model=ResponseModel()):
    pos = np.zeros(len(req)) if pos is None else pos
    return true_probabilities(world, ctx, req, item, pos, prior, model=model)


def test_position_bias_and_fatigue_lower_the_click_probability(small_world, impressions):
    ctx, req, item = impressions
    by_pos = [_p(small_world, ctx, req, item, pos=np.full(len(req), k))[0] for k in range(5)]
    assert all((a > b).all() for a, b in zip(by_pos, by_pos[1:]))
    by_prior = [_p(small_world, ctx, req, item, prior=np.full(len(req), k))[0] for k in (0, 1, 3, 10)]
    assert all((a > b).all() for a, b in zip(by_prior, by_prior[1:]))


def test_context_relevance_raises_the_click_probability(small_world, impressions):
    ctx, req, item = impressions
    w = small_world
    # make every request's intent and first object name the item's own category
    cat = w.items.category[item]
    objects = ctx.objects[req].copy()
    objects[:, 0] = cat
    matched = replace(ctx.take(req), intent_category=cat, objects=objects, intent_price_cap=np.full(len(req), np.nan))
    unmatched = replace(ctx.take(req), intent_category=np.full(len(req), -1, np.int32),
                        objects=np.full_like(objects, -1), intent_brand=np.full(len(req), -1, np.int32),
                        intent_price_cap=np.full(len(req), np.nan))
    idx = np.arange(len(req))
    p_match, c_match = _p(w, matched, idx, item)
    p_none, c_none = _p(w, unmatched, idx, item)
    assert (p_match > p_none).all()
    assert (c_match > c_none).all()
    r = relevance(w, matched, idx, item)
    assert r.intent_match.all() and r.object_match.all()
    # a price above the spoken cap hurts
    capped = replace(matched, intent_price_cap=np.full(len(req), 0.01))
    assert (_p(w, capped, idx, item)[0] < p_match).all()


def test_item_quality_and_scene_relevance_raise_the_click_probability(small_world, impressions):
    ctx, req, item = impressions
    w = small_world
    better = replace(w, items=replace(w.items, quality=w.items.quality + 1.0))
    assert (_p(better, ctx, req, item)[0] > _p(w, ctx, req, item)[0]).all()
    flat = replace(w, scene_category=np.zeros_like(w.scene_category))
    rel = w.scene_category[ctx.scene[req], w.items.category[item]] > 0
    assert (_p(w, ctx, req, item)[0][rel] > _p(flat, ctx, req, item)[0][rel]).all()


def test_bayes_auc_on_default_world_is_in_range(default_world):
    frame = simulate_logged_impressions(default_world, 30_000, seed=1, days=3)
    m = bayes_metrics(frame["click"], frame["p_click"])
    assert 0.75 <= m["auc"] <= 0.86, m
    assert 0.02 < m["positive_rate"] < 0.10
    assert m["mean_prob"] == pytest.approx(m["positive_rate"], rel=0.1)  # labels are drawn from p_click
    clicked = frame.filter(frame["click"])
    assert (frame["conversion"] <= frame["click"]).all()
    assert 0.03 < clicked["conversion"].mean() < 0.35


def test_logged_impressions_shape_reproducibility_and_redaction(small_world):
    a = simulate_logged_impressions(small_world, 2_000, seed=4, days=2)
    b = simulate_logged_impressions(small_world, 2_000, seed=4, days=2)
    assert a.equals(b)
    assert a["consent_measurement"].all()  # the feedback log only holds measured events
    assert a["event_time"].is_sorted()
    assert set(a["item_kind"].unique()) == {"ad", "product"}
    assert a.filter(a["item_kind"] == "ad")["campaign_id"].str.starts_with("cmp").all()
    # the columns shared with the feedback log have compatible types
    schema = event_log_schema("feedback")
    shared = [n for n in schema.names if n in a.columns]
    assert {"user_id", "event_time", "item_id", "campaign_id", "category", "position", "scene", "objects",
            "intent_text", "local_hour", "consent_measurement"} <= set(shared)
    import pyarrow as pa

    a.select(shared).to_arrow().cast(pa.schema([schema.field(n) for n in shared]))
    # sensitive things never reach the observable columns
    sensitive_objects = {small_world.object_vocab[i] for i in np.flatnonzero(small_world.object_sensitive)}
    assert not any(set(objs) & sensitive_objects for objs in a["objects"])
    sensitive_labels = [small_world.taxonomy.get(c).label for c in small_world.sensitive_categories]
    assert not any(label in text for text in a["intent_text"].unique() for label in sensitive_labels)


def test_metrics_known_values():
    y = np.array([0, 0, 1, 1])
    assert auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert log_loss(y, [0.5] * 4) == pytest.approx(np.log(2))
    m = bayes_metrics(y, [0.1, 0.2, 0.8, 0.9])
    assert m["n"] == 4 and m["positive_rate"] == 0.5


def test_feedback_events_fit_the_event_log(small_world, tmp_path):
    from features import append_events, read_events
    from simulation import to_feedback_events

    frame = simulate_logged_impressions(small_world, 1_500, seed=6, days=1)
    events = to_feedback_events(small_world, frame)
    counts = dict(events["type"].value_counts().iter_rows())
    assert counts["impression"] == frame.height
    assert counts["click"] == frame["click"].sum()
    assert counts.get("conversion", 0) == frame["conversion"].sum()
    assert events["event_id"].n_unique() == events.height
    assert events.filter(events["type"] == "conversion")["conversion_value"].min() > 0
    ads = events.filter(events["item_kind"] == "ad")
    assert ads["spend"].sum() > 0 and events.filter(events["item_kind"] == "product")["spend"].sum() == 0
    append_events(tmp_path, "feedback", events)
    back = read_events(tmp_path, "feedback")
    assert back.height == events.height
