"""The world: sizes, consent mix, determinism, no sensitive categories in the catalog."""

import numpy as np
import polars as pl
import pytest

from campaigns import Rules, Taxonomy, campaign_problems, product_problems
from simulation import SimulationConfigError, WorldConfig, build_world, sample_contexts, world_to_campaign_models


def test_default_sizes_and_consent_mix(default_world):
    w = default_world
    assert (w.n_users, w.products.height, w.advertisers.height, w.campaigns.height, w.creatives.height) == (
        20_000, 50_000, 300, 1_000, 3_000)
    shares = w.users["consent_profile"].value_counts(normalize=True)
    share = dict(zip(shares["consent_profile"], shares["proportion"]))
    assert share["all"] == pytest.approx(0.70, abs=0.02)
    assert share["context_only"] == pytest.approx(0.20, abs=0.02)
    assert share["none"] == pytest.approx(0.10, abs=0.02)
    # flags follow the profile
    none = w.users.filter(pl.col("consent_profile") == "none")
    assert not none["consent_context"].any() and not none["consent_personalization"].any()
    ctx_only = w.users.filter(pl.col("consent_profile") == "context_only")
    assert ctx_only["consent_context"].all() and not ctx_only["consent_measurement"].any()
    assert set(w.users["device"].unique()) == {"glasses", "phone"}


def test_same_seed_same_world_other_seed_other_world(small_config, small_world):
    again = build_world(small_config)
    for name in ("users", "advertisers", "products", "campaigns", "creatives"):
        assert getattr(again, name).equals(getattr(small_world, name)), name
    np.testing.assert_array_equal(again.latent.user_interest, small_world.latent.user_interest)
    np.testing.assert_array_equal(again.items.quality, small_world.items.quality)
    other = build_world(WorldConfig(**{**small_config.__dict__, "seed": small_config.seed + 1}))
    assert not other.products.equals(small_world.products)


def test_ids_unique_and_references_resolve(small_world):
    w = small_world
    assert w.products["product_sku"].n_unique() == w.products.height
    assert w.creatives["creative_id"].n_unique() == w.creatives.height
    assert set(w.campaigns["advertiser_id"]) <= set(w.advertisers["advertiser_id"])
    assert set(w.creatives["campaign_id"]) == set(w.campaigns["campaign_id"])  # every campaign has a creative
    skus = set(w.products["product_sku"])
    assert set(w.creatives["product_sku"].drop_nulls()) <= skus
    assert len(w.items) == w.creatives.height + w.products.height


def test_sensitive_categories_never_in_catalog_or_targeting(small_world):
    tax = Taxonomy()
    w = small_world
    assert w.sensitive_categories and not any(tax.is_sensitive(c) for c in w.categories)
    assert not any(tax.is_sensitive(c) for c in w.products["category"])
    assert not any(tax.is_sensitive(c) for c in w.creatives["category"])
    assert not any(tax.is_sensitive(c) for cats in w.campaigns["categories"] for c in cats)


def test_campaign_models_pass_campaigns_validation(small_world):
    advertisers, campaigns, products = world_to_campaign_models(small_world)
    rules = Rules(Taxonomy())
    adv = {a.id: a for a in advertisers}
    for c in campaigns:
        assert campaign_problems(c, rules, advertiser=adv[c.advertiser_id]) == [], c.id
        assert all(cr.landing_url.startswith("https://") for cr in c.creatives)
    for p in products[:500]:
        assert product_problems(p, rules) == []


def test_intents_mention_their_category_and_objects_map_to_categories(small_world):
    w = small_world
    ctx = sample_contexts(w, 3_000, seed=5)
    spoken = np.flatnonzero(ctx.intent_category >= 0)
    assert 0.4 < len(spoken) / len(ctx) < 0.7
    for i in spoken[:500]:
        label = w.taxonomy.get(w.categories[ctx.intent_category[i]]).label
        assert label in ctx.intent_text[i]
    # sensitive intents exist only as things said, never as an intent category
    sens = np.flatnonzero(ctx.intent_sensitive >= 0)
    assert len(sens) > 0 and (ctx.intent_category[sens] == -1).all()
    # leaf objects name their category
    leaf_objects = ctx.objects[(ctx.objects >= 0) & (ctx.objects < len(w.categories))]
    assert (w.object_category[leaf_objects] == leaf_objects).all()
    assert np.all(np.diff(ctx.event_time_ms) >= 0)
    assert set(np.unique(ctx.local_hour)) <= set(range(24))


def test_contexts_follow_scenes_and_are_reproducible(small_world):
    a = sample_contexts(small_world, 2_000, seed=3)
    b = sample_contexts(small_world, 2_000, seed=3)
    np.testing.assert_array_equal(a.objects, b.objects)
    assert list(a.intent_text) == list(b.intent_text)
    # in the gym, the focus is mostly sports
    gym = small_world.scenes.index("gym")
    sports = np.array([c.startswith("sports/") for c in small_world.categories])
    in_gym = a.focus[a.scene == gym]
    assert len(in_gym) > 20 and sports[in_gym].mean() > 0.5


def test_invalid_config_names_the_fix():
    with pytest.raises(SimulationConfigError, match="n_creatives"):
        build_world(WorldConfig(n_campaigns=10, n_creatives=5))
    with pytest.raises(SimulationConfigError, match="consent_mix"):
        build_world(WorldConfig(consent_mix=(0.5, 0.2, 0.1)))
