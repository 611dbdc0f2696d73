"""Serving's catalog path (``models._items``) encodes exactly what ``encode_columns`` does."""

from __future__ import annotations

import dataclasses

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
    assert list(a.lengths) == list(b.lengths) == list(a.values)
    for name in a.lengths:
        np.testing.assert_array_equal(a.lengths[name], b.lengths[name], err_msg=name)
        np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)
        assert a.lengths[name].dtype == np.int32 and a.values[name].dtype == np.int64, name
    assert a.dense.dtype == b.dense.dtype == np.float32
    np.testing.assert_array_equal(a.dense, b.dense)   # bit for bit: the same numpy operations per value


@pytest.mark.parametrize("clipped", [True, False])
def test_catalog_rows_encode_like_columns(world, clipped):
    pipe, df = world
    if not clipped:             # the synthetic log's ranges clip some features to one value
        pipe = dataclasses.replace(pipe, dense_min=None, dense_max=None)
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


def _assert_same_block(a, b) -> None:
    assert a.n == b.n and a.keys == b.keys
    for k, (codes, vocab) in a.codes.items():
        np.testing.assert_array_equal(codes, b.codes[k][0], err_msg=k)
        assert vocab == b.codes[k][1], k
    assert list(a.keyed) == list(b.keyed)
    for key, (codes, firsts, index) in a.keyed.items():
        np.testing.assert_array_equal(codes, b.keyed[key][0], err_msg=str(key))
        assert firsts == b.keyed[key][1] and index == b.keyed[key][2] and list(index) == list(b.keyed[key][2]), key
    assert list(a.sparse) == list(b.sparse) and list(a.padded) == list(b.padded)
    for name, (off, val, k) in a.sparse.items():
        np.testing.assert_array_equal(off, b.sparse[name][0], err_msg=name)
        np.testing.assert_array_equal(val, b.sparse[name][1], err_msg=name)
        assert k == b.sparse[name][2], name
        pk, plens, pids = a.padded[name]
        assert pk == b.padded[name][0], name
        np.testing.assert_array_equal(pids, b.padded[name][2], err_msg=name)
        if plens is not None:
            np.testing.assert_array_equal(plens, b.padded[name][1], err_msg=name)
    for field in ("dense", "clean"):
        assert list(getattr(a, field)) == list(getattr(b, field))
        for k, v in getattr(a, field).items():
            np.testing.assert_array_equal(v, getattr(b, field)[k], err_msg=f"{field}.{k}")
    np.testing.assert_array_equal(a.item_dense, b.item_dense)
    np.testing.assert_array_equal(a.item_dense_at, b.item_dense_at)


@pytest.mark.parametrize("cut", [0, 1, 150, -1, None])
def test_a_block_of_products_and_one_of_ads_join_as_one_block(world, cut):
    """A campaign edit encodes only the ads and appends them to the products' block: the
    result must be the block of every item encoded at once."""
    from models._items import concat_blocks

    pipe, df = world
    items, n = _catalog(df)
    m = n if cut is None else cut % n if cut < 0 else cut
    whole = item_block(pipe, items, n)
    joined = concat_blocks(item_block(pipe, {k: v[:m] for k, v in items.items()}, m),
                           item_block(pipe, {k: v[m:] for k, v in items.items()}, n - m))
    _assert_same_block(joined, whole)
    rows = np.random.default_rng(2).choice(n, size=120)
    for ctx in _contexts(df):
        _assert_same(encode_items(pipe, ctx, joined, rows, None, {}), encode_items(pipe, ctx, whole, rows, None, {}))
    other = dataclasses.replace(pipe, dense_min=None, dense_max=None)
    with pytest.raises(ValueError, match="encode the items at once"):
        concat_blocks(whole, item_block(other, items, n))


def test_the_scorer_keeps_the_products_block_across_campaign_edits(tmp_path):
    prepared = prepare(point_in_time_features(synthetic_impressions(3000, seed=21)))
    reg = Registry(root=tmp_path / "models")
    trained = fit_model("xgboost", prepared, options={"rounds": 10})
    reg.register("xgboost", trained.predictor, prepared.pipeline, alias="production")
    scorer = reg.load("production")
    items, n = _catalog(prepared.split.test)
    m = n - 40                                                # the last 40 items are "ads"
    products = {k: v[:m] for k, v in items.items()}
    block = scorer.item_block(items, n, prefix=(products, m))
    _assert_same_block(block, item_block(prepared.pipeline, items, n))
    kept = scorer._prefix[1]
    edited = {k: products[k] + v[m:-1] for k, v in items.items()}      # an ad paused
    again = scorer.item_block(edited, n - 1, prefix=(products, m))
    assert scorer._prefix[1] is kept, "the products were encoded again for a campaign edit"
    _assert_same_block(again, item_block(prepared.pipeline, edited, n - 1))
    with pytest.raises(ValueError, match="prefix=None"):
        scorer.item_block(dict(items), n, prefix=({"item_id": products["item_id"]}, m))


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


def _columns(items, rows, extra=None) -> dict:
    columns = {k: [items[k][r] for r in rows] for k in items}
    columns.update({k: np.asarray(v).tolist() for k, v in (extra or {}).items()})
    return columns


def test_a_predictor_reading_some_sparse_features_gets_those(world):
    pipe, df = world
    items, n = _catalog(df)
    block, ctx, rows = item_block(pipe, items, n), _contexts(df)[0], np.arange(0, n, 2)
    full = encode_items(pipe, ctx, block, rows)
    some = encode_items(pipe, ctx, block, rows, sparse=frozenset({"scene", "category", "objects_x_category"}))
    assert list(some.lengths) == ["category", "scene", "objects_x_category"]      # the pipeline's order
    for name in some.lengths:
        np.testing.assert_array_equal(some.lengths[name], full.lengths[name])
        np.testing.assert_array_equal(some.values[name], full.values[name])
    np.testing.assert_array_equal(some.dense, full.dense)


@pytest.mark.parametrize("clipped", [True, False])
def test_crosses_remembered_across_requests_stay_exact(world, clipped):
    # an intent first met by candidates without a category (no ids) and then by others: the
    # remembered ids of that intent grow; new detected objects every request; a request that
    # repeats another's context. Unclipped too: the synthetic log never has an object match,
    # so the fitted range clips object_match to 0
    pipe, df = world
    if not clipped:
        pipe = dataclasses.replace(pipe, dense_min=None, dense_max=None)
    items, n = _catalog(df)
    block = item_block(pipe, items, n)
    no_category = np.array([i for i in range(n) if items["category"][i] is None])
    assert len(no_category)
    base = _contexts(df)[0]
    rng = np.random.default_rng(5)
    crosses: dict = {}
    requests = [({**base, "intent_text": "cheap running shoes b3"}, no_category),
                ({**base, "intent_text": "cheap running shoes b3"}, rng.choice(n, 80)),
                ({**base, "objects": ["leaf1", "leaf2"]}, rng.choice(n, 80)),
                ({**base, "objects": ["leaf3"], "intent_category": "home/leaf3"}, rng.choice(n, 80)),
                ({**base, "intent_text": "cheap b12 or b3 shoes under 40 euros"}, rng.choice(n, 80)),
                ({**base, "intent_text": "cheap running shoes b3"}, rng.choice(n, 80))]
    for ctx, rows in requests:
        _assert_same(encode_items(pipe, ctx, block, rows, None, crosses),
                     pipe.encode_columns(ctx, _columns(items, rows), len(rows), {}))
    # the same cache handed another catalog's block starts over (crosses are kept by item code)
    order = rng.permutation(n)
    other = {k: [v[i] for i in order] for k, v in items.items()}
    other_block = item_block(pipe, other, n)
    for ctx, rows in requests:
        _assert_same(encode_items(pipe, ctx, other_block, rows, None, crosses),
                     pipe.encode_columns(ctx, _columns(other, rows), len(rows), {}))


def test_missing_and_non_finite_numbers_read_as_zero(world):
    pipe, df = world
    items, n = _catalog(df)
    items["price"] = list(items["price"])
    items["price"][1], items["price"][2], items["price"][3] = float("nan"), float("inf"), None
    block = item_block(pipe, items, n)
    rows = np.array([0, 1, 2, 3, 4, 1])
    extra = {k: np.array([1.0, np.nan, np.inf, -np.inf, 2.0, 3.0]) for k in STATS}
    extra["item_clicks_24h"] = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])        # one column all finite
    for ctx in ({**_contexts(df)[0], "user_clicks_7d": float("nan"), "ctx_events_24h": float("inf")},
                {**_contexts(df)[1], "consent_personalization": False, "position": -3}):
        _assert_same(encode_items(pipe, ctx, block, rows, extra, {}),
                     pipe.encode_columns(ctx, _columns(items, rows, extra), len(rows), {}))


def test_item_columns_may_be_fewer(world):
    # price per candidate (extra) with the category an item column; category in the context
    pipe, df = world
    items, n = _catalog(df)
    rows = np.arange(0, n, 4)
    prices = np.linspace(0, 90, len(rows))
    without_price = {k: v for k, v in items.items() if k != "price"}
    ctx = _contexts(df)[0]
    _assert_same(encode_items(pipe, ctx, item_block(pipe, without_price, n), rows, {"price": prices}),
                 pipe.encode_columns(ctx, _columns(without_price, rows, {"price": prices}), len(rows), {}))
    without_category = {k: v for k, v in items.items() if k != "category"}
    ctx = {**ctx, "category": df["category"][0]}
    _assert_same(encode_items(pipe, ctx, item_block(pipe, without_category, n), rows),
                 pipe.encode_columns(ctx, _columns(without_category, rows), len(rows), {}))


def test_extra_columns_of_another_length_and_another_pipeline_are_refused(world):
    pipe, df = world
    items, n = _catalog(df)
    block = item_block(pipe, items, n)
    with pytest.raises(InvalidModelInput, match="one number per candidate"):
        encode_items(pipe, {}, block, np.arange(3), {"item_clicks_24h": np.zeros(4)})
    other = FeaturePipeline.fit(synthetic_impressions(500, seed=3))
    with pytest.raises(InvalidModelInput, match="another feature pipeline"):
        encode_items(other, {}, block, np.arange(3))
