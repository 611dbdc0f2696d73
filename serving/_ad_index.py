"""Targeting as boolean masks over a catalog's ads: ``match`` for every ad at once.

``match`` (serving._targeting) is the rule and stays the reference; it costs ~5 µs of
Python per ad, and a request checks ~120 ads, ~0.6 ms of the ~2 ms a fallback-ranked
Recommend spends in Python. ``AdIndex`` holds, per snapshot, one boolean array per
targeted value of each dimension (device, region, scene, object, keyword, category,
exclusion) and per ad whether the dimension is targeted at all. A request then ANDs a
dozen arrays of ~3k booleans, in ``match``'s order so that the refusal counts are the
same, and adds up relevance in the same order with the same floats — equal to ``match``
ad for ad (tests/unit/serving/test_ad_index.py compares them on random catalogs).

Explanations are not computed here: only the ~3 ads that win an auction show one, and
``explain`` asks ``match`` for those.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Sequence

import numpy as np

from serving._context import ContextIndex, RequestContext, singular
from serving._targeting import AdSpec, Match, match

REASONS = ("sensitive", "schedule", "daypart", "device", "region", "location", "excluded", "scene", "objects",
           "keywords", "categories")
"""``match``'s checks, in its order (a refusal counts against the first one that fails)."""


def _masks(n: int, per_ad: Iterable[Iterable[str]]) -> dict[str, np.ndarray]:
    """Value → boolean array of the ads whose set holds it."""
    out: dict[str, np.ndarray] = {}
    for i, values in enumerate(per_ad):
        for v in values:
            m = out.get(v)
            if m is None:
                m = out[v] = np.zeros(n, dtype=bool)
            m[i] = True
    return out


class AdIndex:
    """A catalog's ads as targeting masks (built once per snapshot, read-only afterwards)."""

    def __init__(self, ads: Sequence[AdSpec]) -> None:
        n = self.n = len(ads)
        self.ads = tuple(ads)
        flag = lambda f: np.fromiter((bool(f(a)) for a in ads), dtype=bool, count=n)  # noqa: E731
        self.sensitive = flag(lambda a: a.sensitive)
        self.start = np.array([a.start.timestamp() if a.start is not None else -np.inf for a in ads], dtype=np.float64)
        self.end = np.array([a.end.timestamp() if a.end is not None else np.inf for a in ads], dtype=np.float64)
        self.has_daypart = flag(lambda a: a.dayparting)
        self._dayparts: dict[tuple[int, int], np.ndarray] = {}
        self.has_device, self.device = flag(lambda a: a.devices), _masks(n, (a.devices for a in ads))
        self.has_region, self.region = flag(lambda a: a.regions), _masks(n, (a.regions for a in ads))
        self.has_location = flag(lambda a: a.location_categories)
        self.location = _masks(n, (a.location_categories for a in ads))
        self.excluded = _masks(n, (a.excluded for a in ads))
        self.has_scene, self.scene = flag(lambda a: a.scenes), _masks(n, (a.scenes for a in ads))
        self.has_objects, self.objects = flag(lambda a: a.objects), _masks(n, (a.objects for a in ads))
        self.has_keywords = flag(lambda a: a.keywords)
        # keyword (its words, its ads), reachable from each of its words
        kw_ads = _masks(n, ((k for k, _ in a.keyword_words) for a in ads))
        kw_words = {k: kw for a in ads for k, kw in a.keyword_words}
        self.keywords_by_word: dict[str, list[tuple[frozenset[str], np.ndarray]]] = {}
        for k, kw in kw_words.items():
            for w in kw:
                self.keywords_by_word.setdefault(w, []).append((kw, kw_ads[k]))
        self.has_categories, self.categories = flag(lambda a: a.categories), _masks(n, (a.categories for a in ads))
        codes: dict[str, int] = {}
        self.category_code = np.array([codes.setdefault(a.category, len(codes)) if a.category else -1 for a in ads],
                                      dtype=np.int64)
        self._codes = codes
        self.bid = np.array([a.bid for a in ads], dtype=np.float64)
        ranks = {cid: r for r, cid in enumerate(sorted({a.creative_id for a in ads}))}
        self.creative_rank = np.array([ranks[a.creative_id] for a in ads], dtype=np.int64)
        self._none = np.zeros(n, dtype=bool)

    def _any(self, masks: dict[str, np.ndarray], values: Iterable[str]) -> np.ndarray:
        out = self._none
        for v in values:
            m = masks.get(v)
            if m is not None:
                out = out | m
        return out

    def _daypart(self, weekday: int, hour: int) -> np.ndarray:
        hit = self._dayparts.get((weekday, hour))
        if hit is None:
            hit = np.fromiter((any(weekday in days and lo <= hour < hi for days, lo, hi in a.dayparting)
                               for a in self.ads), dtype=bool, count=self.n)
            self._dayparts[(weekday, hour)] = hit
        return hit

    def select(self, ctx: RequestContext, now: datetime, limit: int) -> tuple[list[tuple[int, float]], dict[str, int]]:
        """The ads that ``match`` ctx at ``now``, as ``(position, relevance)``: in position order,
        or the best ``limit`` by relevance × bid (ties by creative id) when more match; plus
        refusal counts by reason over the ads that target the context's categories or none."""
        cats = ctx.categories
        tops = [c.split("/", 1)[0] for c in cats]
        cat_hit = self._any(self.categories, (*cats, *tops))
        now_s = now.timestamp()
        region = ctx.region
        prefixes = [region] + [region[:i] for i, ch in enumerate(region) if ch == "-"]
        said = ctx.intent_words
        kw_hit = self._none
        for w in set(said):
            for kw, ads in self.keywords_by_word.get(w, ()):
                if kw.issubset(said):
                    kw_hit = kw_hit | ads
        seen = ctx.seen_categories
        checks = (
            ~self.sensitive,
            (self.start <= now_s) & (now_s < self.end),
            ~self.has_daypart | self._daypart(ctx.local_weekday, ctx.local_hour),
            ~self.has_device | self._any(self.device, (ctx.device,)),
            ~self.has_region | self._any(self.region, prefixes),
            ~self.has_location | self._any(self.location, (ctx.location_category,)),
            ~self._any(self.excluded, (*seen, *(c.split("/", 1)[0] for c in seen))),
            ~self.has_scene | self._any(self.scene, (ctx.scene,)),
            ~self.has_objects | self._any(self.objects, (*ctx.objects, *map(singular, ctx.objects))),
            ~self.has_keywords | kw_hit,
            ~self.has_categories | cat_hit,
        )
        alive = ~self.has_categories | cat_hit    # only these can match: the rest never become candidates
        refused: dict[str, int] = {}
        for reason, ok in zip(REASONS, checks):
            failed = int(np.count_nonzero(alive & ~ok))
            if failed:
                refused[reason] = failed
                alive = alive & ok
        positions = np.flatnonzero(alive)
        if not len(positions):
            return [], refused
        # relevance, added in match's order (same floats)
        rel = np.zeros(len(positions), dtype=np.float64)
        rel = np.where(self.has_scene[positions], rel + 1.0, rel)
        rel = np.where(self.has_objects[positions], rel + 2.0, rel)
        rel = np.where(self.has_keywords[positions], rel + 2.0, rel)
        if cats:
            best = np.full(len(positions), -np.inf)
            for c, top in zip(cats, tops):
                w = cats[c]
                m = self._any(self.categories, (c, top))[positions]
                best = np.where(m, np.maximum(best, w), best)
            rel = np.where(self.has_categories[positions], rel + np.minimum(best, 2.0), rel)
            own = self.category_code[positions]
            for c, w in cats.items():
                code = self._codes.get(c)
                if code is not None:
                    rel = np.where(own == code, rel + min(w, 2.0), rel)
        if len(positions) > limit:
            order = np.lexsort((self.creative_rank[positions], -(0.5 + rel) * self.bid[positions]))[:limit]
            positions, rel = positions[order], rel[order]
        return list(zip(positions.tolist(), rel.tolist())), refused


def explain(ad: AdSpec, ctx: RequestContext, now: datetime, index: ContextIndex) -> str:
    """Why ``ad`` serves in ``ctx`` (``match``'s explanation; asked only for the ads shown)."""
    m: Match = match(ad, ctx, now, index)
    return m.explanation
