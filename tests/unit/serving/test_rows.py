"""``CandidateRows.columns()`` is the candidates' merged rows read column-wise: the same
value for every key and candidate, a missing key read from the context as a merged row
would, and the candidate's attributes winning over its statistics. ``catalog_rows()`` is
the same again as catalog rows plus numeric statistics columns."""

from __future__ import annotations

import numpy as np

from campaigns import Product
from serving._candidates import AdCandidate, Catalog, ProductCandidate, _item_columns
from serving._rows import CandidateRows
from serving._targeting import AdSpec, Match


class _Stats:
    def __init__(self, items: dict, campaigns: dict) -> None:
        self._items, self._campaigns = items, campaigns

    def item(self, item_id: str) -> dict:
        return self._items.get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._campaigns.get(campaign_id, {})


def _rows(features, with_catalog: bool = False) -> CandidateRows:
    ads = [AdCandidate(AdSpec(creative_id=f"cr{i}", campaign_id=f"c{i % 2}", advertiser_id=f"a{i}", headline="h",
                              landing_url="https://x.example", strategy="CPC", bid=1.0, category="sports/yoga",
                              brand="B", price=20.0 + i, rating=0.5), Match(True, "ok", 1.5 + i, "why"))
           for i in range(3)]
    products = [ProductCandidate(Product(sku=f"p{i}", title="t", brand="Q", category="home/mugs", price=9.0,
                                         landing_url="https://x.example/p", quality=None if i else 0.8,
                                         advertiser_id="a9" if i else None), 0.3 * i, "why")
                for i in range(4)]
    context = {"scene": "park", "user_id": "u", "item_ctr_24h": -1.0, "brand": "from-context"}
    catalog = None
    if with_catalog:     # the catalog holds more than the candidates, in another order
        spare = AdSpec(creative_id="spare", campaign_id="c9", advertiser_id="a0", headline="h",
                       landing_url="https://x.example", strategy="CPM", bid=2.0)
        items, ad_rows, product_rows = _item_columns([spare] + [a.spec for a in reversed(ads)],
                                                     {p.product.sku: p.product for p in products})
        catalog = Catalog(version=1, ads=(), products={}, products_by_category={}, product_words={},
                          scene_categories={}, top_leaves={}, word_index={}, budgets={},
                          items=items, ad_rows=ad_rows, product_rows=product_rows)
    return CandidateRows(context, ads, products, features, {"sports/yoga": 3}, catalog)


def _assert_same(rows: CandidateRows) -> None:
    merged = rows.candidates()
    columns = rows.columns()
    assert set(columns) == set().union(*(c.keys() for c in merged))
    for key, values in columns.items():
        assert values == [c.get(key, rows.context.get(key)) for c in merged], key


def test_columns_equal_the_merged_rows_with_statistics():
    features = _Stats(items={"cr0": {"item_ctr_24h": 0.1, "item_impressions_24h": 50},
                             "p2": {"item_ctr_24h": 0.3}, "cr2": {"item_id": "shadowed"}},
                      campaigns={"c1": {"campaign_spend_24h": 4.5}})
    rows = _rows(features)
    _assert_same(rows)
    columns = rows.columns()
    assert columns["item_ctr_24h"] == [0.1, -1.0, -1.0, -1.0, -1.0, 0.3, -1.0], "missing: the context's value"
    assert columns["item_id"][2] == "cr2", "the candidate's own attribute wins over a statistic"
    assert columns["user_category_clicks_7d"] == [3, 3, 3, 0, 0, 0, 0]
    assert columns["rating"][3:5] == [0.8, 0.0]


def test_columns_equal_the_merged_rows_without_statistics():
    _assert_same(_rows(None))
    _assert_same(_rows(_Stats({}, {})))


def test_catalog_rows_equal_the_columns():
    features = _Stats(items={"cr0": {"item_ctr_24h": 0.1, "item_impressions_24h": 50},
                             "p2": {"item_ctr_24h": 0.3}, "cr2": {"item_id": "shadowed"}},
                      campaigns={"c1": {"campaign_spend_24h": 4.5}})
    for stats in (features, None):
        rows = _rows(stats, with_catalog=True)
        items, n_items, index, extra = rows.catalog_rows()
        assert n_items == 8 and len(index) == len(rows)
        for key, values in rows.columns().items():
            if key in items:
                assert [items[key][i] for i in index] == values, key
            else:
                np.testing.assert_array_equal(extra[key], [0.0 if v is None else float(v) for v in values],
                                              err_msg=key)
        assert set(extra) == set(rows.columns()) - set(items)
    assert _rows(features).catalog_rows() is None, "no catalog: the ranker encodes columns"


def test_a_model_scores_catalog_rows_as_it_scores_the_merged_rows(tmp_path):
    from models import Registry, fit_model, point_in_time_features, prepare
    from models.testing import synthetic_impressions
    from serving._ranker import ScorerRanker

    prepared = prepare(point_in_time_features(synthetic_impressions(1500, seed=2)))
    reg = Registry(root=tmp_path)
    trained = fit_model("xgboost", prepared, options={"rounds": 15})
    reg.register("xgboost", trained.predictor, prepared.pipeline, alias="production")
    ranker = ScorerRanker(reg.load("production"))
    features = _Stats(items={"cr0": {"item_clicks_24h": 4, "item_impressions_24h": 50},
                             "p2": {"item_impressions_1h": 9}}, campaigns={"c1": {"campaign_impressions_24h": 40}})
    rows = _rows(features, with_catalog=True)
    assert rows.catalog_rows() is not None
    expected = ranker._scorer.score(list(rows))[0]
    np.testing.assert_allclose(ranker.score(rows), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ranker.score(_rows(features)), expected, rtol=1e-5, atol=1e-7)


def _with_columns(rows: CandidateRows, features: _Stats, with_rows: bool) -> CandidateRows:
    """The same candidates over a catalog that carries its statistics as columns."""
    from serving._stats_columns import StatsColumns

    catalog = rows._catalog
    ad_campaigns = [(catalog.ad_rows["spare"], "")] + [(catalog.ad_rows[a.spec.creative_id], a.spec.campaign_id)
                                                      for a in rows._ads]
    stats = StatsColumns(len(catalog.items["item_id"]), {**catalog.product_rows, **catalog.ad_rows}, ad_campaigns)
    stats.fill("item", features._items.items())
    stats.fill("campaign", features._campaigns.items())
    cats: dict[str, int] = {}
    codes = np.array([cats.setdefault(c, len(cats)) for c in catalog.items["category"]])
    fast = Catalog(**{**catalog.__dict__, "stats": stats, "category_codes": codes, "categories": cats})
    ads, products = rows._ads, rows._products
    if with_rows:
        ads = [a._replace(row=fast.ad_rows[a.spec.creative_id]) for a in ads]
        products = [p._replace(row=fast.product_rows[p.product.sku]) for p in products]
    return CandidateRows(rows.context, ads, products, features, rows._clicks, fast)


def test_statistics_as_columns_read_what_the_rows_read():
    features = _Stats(items={"cr0": {"item_ctr_24h": 0.1, "item_impressions_24h": 50, "item_clicks_24h": 4},
                             "p2": {"item_ctr_24h": 0.3, "item_clicks_24h": 1}, "p0": {"item_impressions_24h": 7}},
                      campaigns={"c1": {"campaign_spend_24h": 4.5}, "c0": {"campaign_impressions_24h": 40}})
    slow = _rows(features, with_catalog=True)
    for with_rows in (True, False):
        fast = _with_columns(slow, features, with_rows)
        assert fast._catalog.stats is not None
        items, n, index, extra = fast.catalog_rows()
        _, _, want_index, want = slow.catalog_rows()
        np.testing.assert_array_equal(index, want_index)
        assert set(extra) == set(want)
        for key in want:
            np.testing.assert_array_equal(extra[key], want[key], err_msg=key)
        for got, expected in zip(fast.signals(), slow.signals()):
            np.testing.assert_array_equal(np.asarray(got, dtype=float), np.asarray(expected, dtype=float))
    assert fast.signals()[1][0] == 50 and fast.signals()[3][0], "the user clicked sports/yoga"


def test_stats_columns_follow_changes_and_removals():
    from serving._stats_columns import StatsColumns

    stats = StatsColumns(5, {"a": 0, "b": 1, "p": 4}, enumerate(["c1", "c2", "c1"]))
    stats.set("item", "a", {"item_ctr_24h": 0.5, "item_impressions_24h": 10})
    stats.set("item", "nobody", {"item_ctr_24h": 0.9})                       # not in this catalog
    stats.set("campaign", "c1", {"campaign_spend_24h": 2.0, "campaign_note": "text"})
    rows = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(stats.get("item_ctr_24h", rows), [0.5, 0, 0, 0, 0])
    np.testing.assert_array_equal(stats.get("campaign_spend_24h", rows), [2.0, 0, 2.0, 0, 0], "every ad of c1")
    assert "campaign_note" not in stats.values, "statistics are numbers; text stays on the dict path"
    stats.set("item", "a", {"item_impressions_24h": 12})                     # ctr now null
    assert np.isnan(stats.values["item_ctr_24h"][0]) and stats.values["item_impressions_24h"][0] == 12
    stats.set("campaign", "c1", None)                                        # row gone
    assert np.isnan(stats.values["campaign_spend_24h"]).all()
    np.testing.assert_array_equal(stats.get("missing_key", rows), np.zeros(5))
