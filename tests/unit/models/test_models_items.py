"""Serving's catalog path (``models._items``) encodes exactly what ``encode_columns`` does."""

from __future__ import annotations

import numpy as np
import pytest

from models import FeaturePipeline, InvalidModelInput, Registry, fit_model, point_in_time_features, prepare
from models._items import encode_items, item_block
from models.testing import synthetic_impressions

ITEM_KEYS = ("item_id", "item_kind", "advertiser_id", "campaign_id", "category", "brand", "price", "rating")
STATS = ("item_impressions_1h", "item_clicks_1h", "item_impressions_24h", "item_clicks_24h",
         "campaign_impressions_24h", "user_category_clicks_7d")


def _catalog(df) -> tuple[dict[str, list], int]:
    items = df.unique("item_id", keep="first", maintain_order=True).to_dicts()
    rng = np.random.default_rng(0)
    for i, it in enumerate(items):
        it["rating"] = float(rng.uniform(0, 1)) if i % 3 else 0.0
        if i % 17 == 0:
            it["category"] = None             # an ad with no known category
        if i % 11 == 0:
            it["brand"] = ""
    return {k: [it.get(k) for it in items] for k in ITEM_KEYS}, len(items)


def _contexts(df) -> list[dict]:
    out = []
    for i, r in enumerate(df.head(6).to_dicts()):
        ctx = {k: r[k] for k in ("user_id", "device", "scene", "objects", "intent_text", "location_category",
                                 "region", "local_hour", "local_weekday", "consent_personalization")}
        ctx["intent_category"] = ["sports/running_shoes", None, "fashion/leaf1", "", "home", None][i]
        ctx["intent_text"] = [r["intent_text"], "cheap fashion under 40 euros b12", None, "premium b3 things",
                              "", r["intent_text"]][i]
        ctx["objects"] = [r["objects"], ["running_shoe", "tire"], [], None, ["leaf1"], r["objects"]][i]
        ctx["user_clicks_7d"] = 3
        ctx["user_impressions_7d"] = 40
        out.append(ctx)
    return out


@pytest.fixture(scope="module")
def world():
    df = synthetic_impressions(2000, seed=11)
    return FeaturePipeline.fit(df), df


def _assert_same(a, b) -> None:
    assert set(a.lengths) == set(b.lengths)
    for name in a.lengths:
        np.testing.assert_array_equal(a.lengths[name], b.lengths[name], err_msg=name)
        np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)
    np.testing.assert_allclose(a.dense, b.dense, rtol=1e-6, atol=1e-6)


def test_catalog_rows_encode_like_columns(world):
    pipe, df = world
    items, n = _catalog(df)
    block = item_block(pipe, items, n)
    rng = np.random.default_rng(1)
    crosses: dict = {}                                           # kept across requests, as a Scorer does
    for ctx in _contexts(df) * 2:
        rows = rng.choice(n, size=120, replace=True)          # repeats happen: an item may be ad and product
        extra = {k: rng.integers(0, 50, size=len(rows)).astype(np.float64) for k in STATS}
        extra["item_clicks_1h"][::7] = np.nan                   # a statistic Feast returned as NaN reads as 0
        columns = {k: [items[k][r] for r in rows] for k in ITEM_KEYS}
        columns.update({k: v.tolist() for k, v in extra.items()})
        _assert_same(encode_items(pipe, ctx, block, rows, extra, crosses),
                     pipe.encode_columns(ctx, columns, len(rows), {}))
    assert crosses, "crosses are remembered"


def test_without_extra_columns_the_statistics_read_as_context(world):
    pipe, df = world
    items, n = _catalog(df)
    ctx = {**_contexts(df)[1], "item_impressions_24h": 7}     # a merged row would read the context's value
    rows = np.arange(0, n, 3)
    columns = {k: [items[k][r] for r in rows] for k in ITEM_KEYS}
    _assert_same(encode_items(pipe, ctx, item_block(pipe, items, n), rows),
                 pipe.encode_columns(ctx, columns, len(rows), {}))


def test_empty_request_and_bad_input_are_refused_clearly(world):
    pipe, df = world
    items, n = _catalog(df)
    block = item_block(pipe, items, n)
    assert encode_items(pipe, _contexts(df)[0], block, np.zeros(0, dtype=np.int64)).size == 0
    with pytest.raises(InvalidModelInput, match="one value per catalog item"):
        item_block(pipe, {**items, "price": items["price"][:-1]}, n)
    with pytest.raises(InvalidModelInput, match="pass each column once"):
        encode_items(pipe, {}, block, np.arange(3), {"price": np.zeros(3)})


@pytest.mark.parametrize("kind", ["xgboost", "logreg"])
def test_scorer_scores_catalog_rows_like_merged_rows(tmp_path, kind):
    prepared = prepare(point_in_time_features(synthetic_impressions(3000, seed=21)))
    reg = Registry(root=tmp_path / "models")
    trained = fit_model(kind, prepared, options={"xgboost": {"rounds": 20}, "logreg": {"max_iter": 30}}[kind])
    reg.register(kind, trained.predictor, prepared.pipeline, alias="production")
    scorer = reg.load("production")
    df = prepared.split.test
    items, n = _catalog(df)
    ctx = _contexts(df)[0]
    rows = np.arange(min(n, 200))
    extra = {"item_impressions_24h": np.arange(len(rows), dtype=np.float64)}
    merged = [{**ctx, **{k: items[k][r] for k in ITEM_KEYS}, "item_impressions_24h": float(i)}
              for i, r in enumerate(rows)]
    pctr, pcvr = scorer.score_items(ctx, items, n, rows, extra)
    want_ctr, want_cvr = scorer.score(merged)
    np.testing.assert_allclose(pctr, want_ctr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pcvr, want_cvr, rtol=1e-5, atol=1e-6)
    only, none = scorer.score_items(ctx, items, n, rows, extra, cvr=False)
    np.testing.assert_allclose(only, want_ctr, rtol=1e-5, atol=1e-6)
    assert none is None
    block = scorer.item_block(items, n)
    assert scorer.item_block(items, n) is block                             # built once per catalog
    newer = dict(items)                                                     # the next snapshot's catalog
    assert scorer.item_block(newer, n) is not block
    # requests still holding the previous catalog while serving swaps must not rebuild it
    assert scorer.item_block(items, n) is block and scorer.item_block(newer, n) is scorer.item_block(newer, n)
    scorer.item_block(dict(items), n)
    assert scorer.item_block(items, n) is not block, "only the two latest catalogs are kept"


def test_distinct_combinations_of_several_item_columns_decode_back():
    # crosses of two item columns (none in today's schema) go through the same decoding
    from models._items import _distinct, _factorize

    cats = ["a/x", "b/y", "a/x", None, "b/y", "a/x"]
    brands = ["B1", "B1", "B2", "B1", "B1", "B2"]
    codes = {"category": _factorize(cats), "brand": _factorize(brands)}
    rows = np.array([5, 0, 1, 3, 4, 2])
    combos, inverse = _distinct(codes, ["category", "brand"], rows)
    assert len(combos) == len(set(combos)) == 4
    assert [combos[i] for i in inverse] == [(cats[r], brands[r]) for r in rows]
