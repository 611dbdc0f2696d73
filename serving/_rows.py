"""The ranker's input for one request, built only as far as the ranker reads it.

``CandidateRows`` is the ``Sequence[Mapping]`` the ``Ranker`` protocol takes: ``rows[i]``
is the request context (scene, objects, ..., the user's features) merged with candidate
``i``'s attributes and item/campaign statistics. A model from the registry reads every
key of every row; the fallback ranker reads four numbers per candidate. Building ~250
merged dicts of ~25 keys costs ~1 ms per request, more than everything the fallback
ranker does, so the dicts are built on first access only and ``signals()`` hands the
fallback its four columns directly. ``context`` / ``candidates()`` let a ranker that can
encode the request-level features once (``models.Scorer.score_columns``) do so.

When the catalog carries its statistics as columns (``Catalog.stats``) and every
candidate its catalog row, ``signals()`` and ``catalog_rows()`` read the statistics as
numpy gathers instead of a dict per candidate (``serving._stats_columns`` says why).
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

from serving._candidates import item_attributes

_NO_STATS: dict = {}


def category_clicks(user: Mapping) -> dict[str, int]:
    """The user's 7-day clicks per engaged category (the first entry of a category counts)."""
    out: dict[str, int] = {}
    for cat, n in zip(user.get("user_engaged_categories_7d") or [], user.get("user_engaged_category_clicks_7d") or []):
        if cat not in out:
            out[cat] = int(n or 0)
    return out


def _number(v) -> float:
    return 0.0 if v is None else float(v)


class CandidateRows(Sequence):
    """Rows for the ads then the products of one request (see the module docstring).

    ``context``: the request-level row; ``ads``: ``AdCandidate``s; ``products``:
    ``ProductCandidate``s; ``item_features``: the item/campaign statistics cache (or None);
    ``clicks_by_category``: ``category_clicks(user)`` when the user has affinities, else None.
    """

    def __init__(self, context: dict, ads: Sequence, products: Sequence, item_features=None,
                 clicks_by_category: Mapping[str, int] | None = None, catalog=None) -> None:
        self.context = context
        self._ads = ads
        self._products = products
        self._features = item_features
        self._clicks = clicks_by_category
        self._catalog = catalog
        self._candidates: list[dict] | None = None
        self._index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._ads) + len(self._products)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return {**self.context, **self.candidates()[i]}

    def __iter__(self) -> Iterator[dict]:
        context = self.context
        return iter([{**context, **c} for c in self.candidates()])

    def _user_clicks(self, category: str) -> int:
        return self._clicks.get(category, 0) if self._clicks else 0

    def candidates(self) -> list[dict]:
        """Candidate attributes and statistics without the context (built once)."""
        if self._candidates is None:
            features = self._features
            out = []
            for cand in self._ads:
                spec = cand.spec
                stats = features.item(spec.creative_id) if features is not None else _NO_STATS
                camp = features.campaign(spec.campaign_id) if features is not None else _NO_STATS
                out.append({**stats, **camp, "item_id": spec.creative_id, "item_kind": "ad",
                            "advertiser_id": spec.advertiser_id, "campaign_id": spec.campaign_id,
                            "category": spec.category, "brand": spec.brand, "price": spec.price, "rating": spec.rating,
                            "relevance": cand.match.relevance, "user_category_clicks_7d": self._user_clicks(spec.category)})
            for cand in self._products:
                p = cand.product
                stats = features.item(p.sku) if features is not None else _NO_STATS
                out.append({**stats, "item_id": p.sku, "item_kind": "product", "advertiser_id": p.advertiser_id or "",
                            "campaign_id": "", "category": p.category, "brand": p.brand, "price": p.price,
                            "rating": float(p.quality or 0.0),
                            "relevance": cand.relevance, "user_category_clicks_7d": self._user_clicks(p.category)})
            self._candidates = out
        return self._candidates

    def columns(self) -> dict[str, list]:
        """``candidates()`` as columns: ``key → one value per candidate``, a candidate without
        the key holding ``context.get(key)`` (what a merged row would read). A model encodes
        columns (``models.Scorer.score_columns``); building them from the candidates directly
        skips the ~240 per-candidate dicts (~1 ms a request with a model registered)."""
        ads, products, context = self._ads, self._products, self.context
        n = len(ads) + len(products)
        cols: dict[str, list] = {}
        for i, row in self._statistics():     # first: the attributes below override them, as in a merged row
            for k, v in row.items():
                column = cols.get(k)
                if column is None:
                    column = cols[k] = [context.get(k)] * n
                column[i] = v
        cols.update(item_attributes([c.spec for c in ads], [c.product for c in products]))
        cols["relevance"] = [c.match.relevance for c in ads] + [c.relevance for c in products]
        cols["user_category_clicks_7d"] = [self._user_clicks(cat) for cat in cols["category"]]
        return cols

    def _statistics(self) -> list[tuple[int, Mapping]]:
        """(candidate position, statistics row) for every candidate with item or campaign
        statistics: the item rows, then the campaign rows (a campaign value wins a shared key)."""
        features = self._features
        if features is None:
            return []
        item, campaign = features.item, features.campaign
        specs = [c.spec for c in self._ads]
        rows = [item(s.creative_id) for s in specs] + [item(c.product.sku) for c in self._products]
        out = [(i, row) for i, row in enumerate(rows) if row]       # most candidates have none yet
        out += [(i, row) for i, row in enumerate(campaign(s.campaign_id) for s in specs) if row]
        return out

    def catalog_rows(self) -> tuple[Mapping[str, list], int, np.ndarray, dict[str, np.ndarray]] | None:
        """The candidates as rows of the catalog's item columns (``Catalog.items``), with the
        per-candidate statistics as float columns — ``models.Scorer.score_items``'s input,
        equal to ``columns()`` merged over the context. None without a catalog, or when a
        candidate is not in it."""
        catalog = self._catalog
        if catalog is None or catalog.items is None:
            return None
        ads, products, context = self._ads, self._products, self.context
        index = self.catalog_index()
        if index is None:
            return None
        n = len(index)
        extra: dict[str, np.ndarray] = {}
        items = catalog.items
        stats = catalog.stats
        if stats is not None:
            for k, column in stats.values.items():
                if k in items:
                    continue
                values = column[index]
                absent = np.isnan(values)
                if not absent.all():
                    values[absent] = _number(context.get(k))
                    extra[k] = values
        else:
            for i, row in self._statistics():
                for k, v in row.items():
                    if k in items:         # the candidate's own attribute wins, as in a merged row
                        continue
                    column = extra.get(k)
                    if column is None:
                        column = extra[k] = np.full(n, _number(context.get(k)))
                    column[i] = _number(v)
        extra["relevance"] = np.array([float(c.match.relevance or 0.0) for c in ads]
                                      + [float(c.relevance or 0.0) for c in products], dtype=np.float64)
        extra["user_category_clicks_7d"] = self._category_clicks(index)
        return items, len(items["item_id"]), index, extra

    def catalog_index(self) -> np.ndarray | None:
        """Every candidate's row in ``Catalog.items`` (None: no catalog, or a candidate not in it)."""
        if self._index is None:
            catalog = self._catalog
            if catalog is None or catalog.items is None:
                return None
            ads, products = self._ads, self._products
            rows = [c.row for c in ads] + [c.row for c in products]
            if rows and min(rows) < 0:       # candidates built without their rows (tests, tools)
                try:
                    ad_rows, product_rows = catalog.ad_rows, catalog.product_rows
                    rows = [ad_rows[c.spec.creative_id] for c in ads] + [product_rows[c.product.sku] for c in products]
                except KeyError:
                    return None
            self._index = np.asarray(rows, dtype=np.int64)
        return self._index

    def _category_clicks(self, index: np.ndarray) -> np.ndarray:
        """The user's 7-day clicks on each candidate's category (0 without affinities)."""
        clicks, catalog = self._clicks, self._catalog
        if not clicks:
            return np.zeros(len(index))
        codes = catalog.categories if catalog is not None else None
        if codes is None or catalog.category_codes is None:
            return np.array([clicks.get(c.spec.category, 0) for c in self._ads]
                            + [clicks.get(c.product.category, 0) for c in self._products], dtype=np.float64)
        by_code = np.zeros(len(codes) + 1)
        for cat, n in clicks.items():
            code = codes.get(cat)
            if code is not None:
                by_code[code] = n
        return by_code[catalog.category_codes[index]]

    def signals(self) -> tuple[list[float], list[float], list[float], list[bool]]:
        """Per candidate: relevance, item impressions (24 h), item clicks (24 h), whether the
        user clicked the candidate's category in 7 days — what the fallback ranker reads,
        equal to ``row.get(...)`` of the full rows, without building them."""
        features = self._features
        relevance = [float(c.match.relevance or 0.0) for c in self._ads] + [float(c.relevance or 0.0) for c in self._products]
        columns = self._catalog.stats if self._catalog is not None else None
        index = self.catalog_index() if columns is not None else None
        if index is not None:
            engaged = self._category_clicks(index) > 0
            return (relevance, columns.get("item_impressions_24h", index), columns.get("item_clicks_24h", index),
                    engaged)
        ids = [c.spec.creative_id for c in self._ads] + [c.product.sku for c in self._products]
        stats = [features.item(i) for i in ids] if features is not None else [_NO_STATS] * len(ids)
        shows = [float(s.get("item_impressions_24h") or 0.0) if s else 0.0 for s in stats]
        clicked = [float(s.get("item_clicks_24h") or 0.0) if s else 0.0 for s in stats]
        if self._clicks:
            clicks = self._clicks
            cats = [c.spec.category for c in self._ads] + [c.product.category for c in self._products]
            engaged = [bool(clicks.get(cat)) for cat in cats]
        else:
            engaged = [False] * len(ids)
        return relevance, shows, clicked, engaged
