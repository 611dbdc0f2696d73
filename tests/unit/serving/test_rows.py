"""``CandidateRows.columns()`` is the candidates' merged rows read column-wise: the same
value for every key and candidate, a missing key read from the context as a merged row
would, and the candidate's attributes winning over its statistics."""

from __future__ import annotations

from campaigns import Product
from serving._candidates import AdCandidate, ProductCandidate
from serving._rows import CandidateRows
from serving._targeting import AdSpec, Match


class _Stats:
    def __init__(self, items: dict, campaigns: dict) -> None:
        self._items, self._campaigns = items, campaigns

    def item(self, item_id: str) -> dict:
        return self._items.get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._campaigns.get(campaign_id, {})


def _rows(features) -> CandidateRows:
    ads = [AdCandidate(AdSpec(creative_id=f"cr{i}", campaign_id=f"c{i % 2}", advertiser_id=f"a{i}", headline="h",
                              landing_url="https://x.example", strategy="CPC", bid=1.0, category="sports/yoga",
                              brand="B", price=20.0 + i, rating=0.5), Match(True, "ok", 1.5 + i, "why"))
           for i in range(3)]
    products = [ProductCandidate(Product(sku=f"p{i}", title="t", brand="Q", category="home/mugs", price=9.0,
                                         landing_url="https://x.example/p", quality=None if i else 0.8,
                                         advertiser_id="a9" if i else None), 0.3 * i, "why")
                for i in range(4)]
    context = {"scene": "park", "user_id": "u", "item_ctr_24h": -1.0, "brand": "from-context"}
    return CandidateRows(context, ads, products, features, {"sports/yoga": 3})


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
