"""The synthetic world as plain data: catalog, campaigns, users and their latent tastes.

``build_world(WorldConfig(...))`` is deterministic in ``config.seed``. Observable
attributes live in polars frames (``users``, ``advertisers``, ``products``,
``campaigns``, ``creatives``); the latent quantities the ground truth uses
(``Latent``) and a unified item table (``Items``: every creative, then every product)
are numpy arrays, so the response model is vectorised over millions of impressions.
Only non-sensitive leaves carry products and campaigns; sensitive leaves exist in
``object_vocab`` and intents only, as things the assistant may see or hear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl

from campaigns.taxonomy import Taxonomy
from simulation import _vocab as V
from simulation.errors import SimulationConfigError


@dataclass(frozen=True)
class WorldConfig:
    """Sizes and seed of a world; defaults are the demo/benchmark world."""

    seed: int = 7
    n_users: int = 20_000
    n_products: int = 50_000
    n_advertisers: int = 300
    n_campaigns: int = 1_000
    n_creatives: int = 3_000
    consent_mix: tuple[float, float, float] = (0.7, 0.2, 0.1)
    """Shares of consent profiles all / context_only / none."""
    glasses_share: float = 0.4
    """Share of users on glasses (the rest on phones)."""
    start_date: date = date(2026, 11, 1)
    """Campaigns run from here; logged traffic usually starts around it."""
    currency: str = "EUR"

    def validate(self) -> None:
        if self.n_users < 1 or self.n_products < 1:
            raise SimulationConfigError("a world needs at least one user and one product; raise n_users/n_products")
        if self.n_advertisers < 1:
            raise SimulationConfigError("n_advertisers must be at least 1")
        if self.n_campaigns < self.n_advertisers and self.n_campaigns < 1:
            raise SimulationConfigError("n_campaigns must be at least 1")
        if self.n_creatives < self.n_campaigns:
            raise SimulationConfigError(
                f"n_creatives ({self.n_creatives}) must be >= n_campaigns ({self.n_campaigns}): every campaign needs a creative"
            )
        if abs(sum(self.consent_mix) - 1.0) > 1e-6 or min(self.consent_mix) < 0:
            raise SimulationConfigError(f"consent_mix {self.consent_mix} must be three non-negative shares summing to 1")
        if not 0.0 <= self.glasses_share <= 1.0:
            raise SimulationConfigError("glasses_share must be within [0, 1]")


@dataclass(frozen=True)
class Latent:
    """What the world knows and the models must infer (never sent anywhere)."""

    user_interest: np.ndarray          # (n_users, n_categories) float32, log-affinity per leaf
    user_brand: np.ndarray             # (n_users, n_brands) float32, brand affinity
    user_price_level: np.ndarray       # (n_users,) preferred price level within a category, 0 (cheap)..1 (premium)
    user_price_sensitivity: np.ndarray  # (n_users,) how much a price above the preferred level hurts, >= 0
    user_bias: np.ndarray              # (n_users,) general propensity to click
    user_activity: np.ndarray          # (n_users,) expected context events per day
    user_scene_pref: np.ndarray        # (n_users, n_scenes) probability of being in each scene (before hour effects)


@dataclass(frozen=True)
class Items:
    """Every servable item, creatives first (ads) then products (suggestions)."""

    kind: np.ndarray          # (n_items,) int8: 0 = ad (creative), 1 = product
    item_id: np.ndarray       # (n_items,) object: creative id or product sku
    category: np.ndarray      # (n_items,) int32 index into World.categories
    brand: np.ndarray         # (n_items,) int32 index into World.brands
    price: np.ndarray         # (n_items,) float64, in the world currency
    price_level: np.ndarray   # (n_items,) float32, price quantile within its category (0..1)
    quality: np.ndarray       # (n_items,) float32, latent attractiveness
    rating: np.ndarray        # (n_items,) float32, observable noisy view of quality in [0, 1] (the product's rating)
    campaign: np.ndarray      # (n_items,) int32 campaign index, -1 for products
    advertiser: np.ndarray    # (n_items,) int32 advertiser index
    product: np.ndarray       # (n_items,) int32 product index (ads: the promoted product, -1 if none)

    def __len__(self) -> int:
        return len(self.kind)


@dataclass(frozen=True)
class World:
    """A whole simulated world; build with ``build_world``."""

    config: WorldConfig
    taxonomy: Taxonomy
    categories: tuple[str, ...]          # non-sensitive leaf ids, index = category index
    sensitive_categories: tuple[str, ...]
    brands: tuple[str, ...]              # one brand per advertiser, same index
    scenes: tuple[str, ...]
    scene_category: np.ndarray           # (n_scenes, n_categories) float32 relevance of a category in a scene (0..~4)
    scene_hour: np.ndarray               # (n_scenes, 24, 2) float32 weight of a scene by local hour and weekend flag
    object_vocab: tuple[str, ...]        # detectable object labels (leaf objects, sensitive ones, distractors)
    object_category: np.ndarray          # (n_objects,) int32 category index, -1 for sensitive/distractor objects
    object_sensitive: np.ndarray         # (n_objects,) bool
    users: pl.DataFrame
    advertisers: pl.DataFrame
    products: pl.DataFrame
    campaigns: pl.DataFrame
    creatives: pl.DataFrame
    items: Items
    latent: Latent
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    # -- lookups ---------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return self.users.height

    def category_index(self, category_id: str) -> int:
        return self._index["category"][category_id]

    def item_index(self, item_id: str) -> int:
        """Index into ``items`` of a creative id or product sku (KeyError if unknown)."""
        return self._index["item"][item_id]

    def find_item(self, item_id: str) -> int | None:
        """Index into ``items`` of a creative id or product sku, ``None`` if the world has no such item."""
        return self._index["item"].get(item_id)

    def user_index(self, user_id: str) -> int:
        return self._index["user"][user_id]

    @property
    def user_ids(self) -> list[str]:
        """User ids by user index (a plain list, for fast per-event lookups)."""
        return self._index["user_ids"]

    @property
    def category_top(self) -> np.ndarray:
        """(n_categories,) int32: index of each category's top in ``tops``."""
        return self._index["category_top"]

    @property
    def tops(self) -> tuple[str, ...]:
        return self._index["tops"]

    def items_of_category(self, kind: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR over categories of one item kind: (order, starts, counts), ``order`` item indices."""
        return self._index["csr"][kind]


def _rng(seed: int, stream: int) -> np.random.Generator:
    # one independent stream per component, so adding users does not reshuffle products
    return np.random.default_rng([seed, stream])


def _brand_names(n: int, rng: np.random.Generator) -> list[str]:
    combos = [(a + b).capitalize() for a in V.BRAND_SYLLABLES_A for b in V.BRAND_SYLLABLES_B]
    combos = sorted(set(combos))
    rng.shuffle(combos)
    return [combos[i % len(combos)] + ("" if i < len(combos) else str(i // len(combos) + 1)) for i in range(n)]


def _object_vocab(taxonomy: Taxonomy, categories: tuple[str, ...]):
    labels: list[str] = []
    cat_of: list[int] = []
    sens: list[bool] = []
    used: set[str] = set()

    def add(label: str, cat: int, sensitive: bool, top: str) -> None:
        if label in used:
            label = f"{top}_{label}"
        used.add(label)
        labels.append(label)
        cat_of.append(cat)
        sens.append(sensitive)

    for i, cid in enumerate(categories):
        c = taxonomy.get(cid)
        add(V.object_label(c.leaf), i, False, c.top)
    for c in taxonomy.leaves(include_sensitive=True):
        if c.sensitive:
            add(V.object_label(c.leaf), -1, True, c.top)
    for scene in V.SCENES:
        for label in scene.generic_objects:
            if label not in used:
                add(label, -1, False, "scene")
    for label in V.DISTRACTOR_OBJECTS:
        if label not in used:
            add(label, -1, False, "misc")
    return tuple(labels), np.array(cat_of, dtype=np.int32), np.array(sens, dtype=bool)


def _scene_tables(categories: tuple[str, ...], taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    n_s, n_c = len(V.SCENES), len(categories)
    rel = np.zeros((n_s, n_c), dtype=np.float32)
    hour = np.full((n_s, 24, 2), 0.05, dtype=np.float32)
    for s, scene in enumerate(V.SCENES):
        for j, cid in enumerate(categories):
            rel[s, j] = scene.tops.get(taxonomy.get(cid).top, 0.0) + scene.leaves.get(cid, 0.0)
        for lo, hi, w in scene.hours:
            hour[s, lo:hi, :] += w
        hour[s, :, 0] *= scene.weekday_weight  # index 0 = weekday, 1 = weekend
    return rel, hour


def build_world(config: WorldConfig | None = None, taxonomy: Taxonomy | None = None) -> World:
    """Build a whole world deterministically from ``config.seed`` (about a second at default size)."""
    config = config or WorldConfig()
    config.validate()
    taxonomy = taxonomy or Taxonomy()
    categories = tuple(c.id for c in taxonomy.leaves())
    sensitive = tuple(c.id for c in taxonomy.leaves(include_sensitive=True) if c.sensitive)
    cat_index = {c: i for i, c in enumerate(categories)}
    tops = tuple(t for t in taxonomy.tops if not taxonomy.is_sensitive(t))
    top_index = {t: i for i, t in enumerate(tops)}
    category_top = np.array([top_index[taxonomy.get(c).top] for c in categories], dtype=np.int32)
    n_c, n_t = len(categories), len(tops)
    scene_category, scene_hour = _scene_tables(categories, taxonomy)
    object_vocab, object_category, object_sensitive = _object_vocab(taxonomy, categories)

    # -- advertisers and brands ------------------------------------------------------
    rng = _rng(config.seed, 1)
    n_a = config.n_advertisers
    brands = _brand_names(n_a, rng)
    adv_top = np.arange(n_a) % n_t
    rng.shuffle(adv_top)
    adv_top2 = (adv_top + rng.integers(1, n_t, n_a)) % n_t
    adv_size = rng.pareto(1.2, n_a) + 1.0           # Zipf-like: a few big advertisers
    adv_quality = rng.normal(0, 0.3, n_a).astype(np.float32)
    advertiser_ids = [f"adv{i:04d}" for i in range(n_a)]
    advertisers = pl.DataFrame({
        "advertiser_id": advertiser_ids,
        "name": [f"{b} GmbH" if i % 3 == 0 else f"{b} Inc." for i, b in enumerate(brands)],
        "brand": brands,
        "primary_top": [tops[t] for t in adv_top],
        "secondary_top": [tops[t] for t in adv_top2],
        "domain": [f"{b.lower()}.example.com" for b in brands],
    })

    # -- products ----------------------------------------------------------------------
    rng = _rng(config.seed, 2)
    n_p = config.n_products
    cat_pop = rng.gamma(2.0, 1.0, n_c)
    p_cat = rng.choice(n_c, n_p, p=cat_pop / cat_pop.sum())
    # advertisers covering each top (primary weighs 3x the secondary)
    cover = np.zeros((n_t, n_a))
    cover[adv_top, np.arange(n_a)] += 3.0 * adv_size
    cover[adv_top2, np.arange(n_a)] += adv_size
    cover[cover.sum(axis=1) == 0] = adv_size  # a top no advertiser covers (tiny worlds): anyone sells it
    cum = np.cumsum(cover / cover.sum(axis=1, keepdims=True), axis=1)
    p_top = category_top[p_cat]
    p_adv = np.minimum((cum[p_top] < rng.random(n_p)[:, None]).sum(axis=1), n_a - 1)
    base_price = np.exp(rng.normal(np.log(30), 0.9, n_c))  # per-category price scale
    p_price = np.round(base_price[p_cat] * np.exp(rng.normal(0, 0.5, n_p)), 2).clip(0.5, None)
    p_quality = (rng.normal(0, 0.5, n_p) + adv_quality[p_adv]).astype(np.float32)
    p_level = _price_level(p_cat, p_price, n_c)
    p_rating = np.round(1.0 / (1.0 + np.exp(-(p_quality + rng.normal(0, 0.5, n_p)))), 2)
    skus = [f"sku{i:06d}" for i in range(n_p)]
    adj = np.array(V.PRODUCT_ADJECTIVES)[rng.integers(len(V.PRODUCT_ADJECTIVES), size=n_p)]
    labels = np.array([taxonomy.get(c).label for c in categories])
    brand_arr = np.array(brands)
    products = pl.DataFrame({
        "product_sku": skus,
        "advertiser_id": np.array(advertiser_ids)[p_adv],
        "brand": brand_arr[p_adv],
        "category": np.array(categories)[p_cat],
        "title": [f"{b} {a} {l}" for b, a, l in zip(brand_arr[p_adv], adj, labels[p_cat])],
        "price": p_price,
        "currency": config.currency,
        # a noisy, observable view of the latent quality (star ratings, returns), in [0, 1]
        "rating": p_rating,
        "landing_url": [f"https://{brands[a].lower()}.example.com/p/{s}" for a, s in zip(p_adv, skus)],
    })

    # -- campaigns -------------------------------------------------------------------------
    rng = _rng(config.seed, 3)
    n_k = config.n_campaigns
    k_adv = np.concatenate([np.arange(min(n_a, n_k)), rng.choice(n_a, max(0, n_k - n_a), p=adv_size / adv_size.sum())])
    rng.shuffle(k_adv)
    prods_by_adv = _group(p_adv, n_a)
    k_cats: list[list[int]] = []
    k_products: list[list[int]] = []
    for a in k_adv:
        own = prods_by_adv[a]
        if len(own):
            cats_here = np.unique(p_cat[own])
            pick = rng.choice(cats_here, min(len(cats_here), int(rng.integers(1, 4))), replace=False)
        else:
            in_top = np.flatnonzero(category_top == adv_top[a])
            pick = rng.choice(in_top, 1)
        pick = sorted(int(c) for c in pick)
        mine = [int(p) for p in own if p_cat[p] in pick][:20]
        k_cats.append(pick)
        k_products.append(mine)
    pricing = np.where(rng.random(n_k) < 0.85, "cpc", "cpm")
    bid = np.where(pricing == "cpc", np.exp(rng.normal(np.log(0.6), 0.5, n_k)), np.exp(rng.normal(np.log(4.0), 0.4, n_k)))
    bid = np.round(np.clip(bid, 0.05, 20.0), 2)
    budget = np.round(np.exp(rng.normal(np.log(300), 0.8, n_k)).clip(50, 20_000), 0)
    start = datetime(config.start_date.year, config.start_date.month, config.start_date.day, tzinfo=timezone.utc)
    k_start = [start - timedelta(days=int(d)) for d in rng.integers(0, 10, n_k)]
    k_end = [s + timedelta(days=int(d)) for s, d in zip(k_start, rng.integers(45, 120, n_k))]
    campaign_ids = [f"cmp{i:05d}" for i in range(n_k)]
    campaigns = pl.DataFrame({
        "campaign_id": campaign_ids,
        "advertiser_id": np.array(advertiser_ids)[k_adv],
        "name": [f"{brands[a]} {taxonomy.get(categories[c[0]]).label} {i}" for i, (a, c) in enumerate(zip(k_adv, k_cats))],
        "categories": [[categories[c] for c in cs] for cs in k_cats],
        "product_skus": [[skus[p] for p in ps] for ps in k_products],
        "objective": np.array(["traffic", "conversions", "awareness"])[rng.choice(3, n_k, p=[0.5, 0.35, 0.15])],
        "pricing": pricing,
        "bid": bid,
        "daily_budget": budget,
        "total_budget": budget * 30,
        "currency": config.currency,
        "start_time": k_start,
        "end_time": k_end,
        "frequency_cap_per_day": rng.integers(3, 11, n_k),
    })

    # -- creatives -------------------------------------------------------------------------
    rng = _rng(config.seed, 4)
    n_r = config.n_creatives
    r_cmp = np.concatenate([np.arange(n_k), rng.integers(0, n_k, n_r - n_k)])
    r_cmp.sort(kind="stable")
    r_prod = np.full(n_r, -1, dtype=np.int32)
    r_cat = np.zeros(n_r, dtype=np.int32)
    for i, k in enumerate(r_cmp):
        ps = k_products[k]
        if ps:
            r_prod[i] = ps[int(rng.integers(len(ps)))]
            r_cat[i] = p_cat[r_prod[i]]
        else:
            r_cat[i] = k_cats[k][int(rng.integers(len(k_cats[k])))]
    r_adv = k_adv[r_cmp]
    has_p = r_prod >= 0
    r_price = np.where(has_p, p_price[np.maximum(r_prod, 0)], np.round(base_price[r_cat], 2))
    r_quality = (rng.normal(0, 0.5, n_r) + adv_quality[r_adv]).astype(np.float32)
    # drawn to keep the seeded stream (and every world built before) unchanged; unused since
    # a product-less creative shows no rating (below)
    r_rating = np.round(1.0 / (1.0 + np.exp(-(r_quality + rng.normal(0, 0.5, n_r)))), 2)
    creative_ids = [f"cr{i:05d}" for i in range(n_r)]
    hooks = np.array(V.HEADLINE_HOOKS)[rng.integers(len(V.HEADLINE_HOOKS), size=n_r)]
    ctas = np.array(V.CALLS_TO_ACTION)[rng.integers(len(V.CALLS_TO_ACTION), size=n_r)]
    creatives = pl.DataFrame({
        "creative_id": creative_ids,
        "campaign_id": np.array(campaign_ids)[r_cmp],
        "advertiser_id": np.array(advertiser_ids)[r_adv],
        "product_sku": [skus[p] if p >= 0 else None for p in r_prod],
        "category": np.array(categories)[r_cat],
        "brand": brand_arr[r_adv],
        "headline": [f"{brands[a]} {labels[c]}: {h}" for a, c, h in zip(r_adv, r_cat, hooks)],
        "body": [f"Discover {labels[c]} from {brands[a]}." for a, c in zip(r_adv, r_cat)],
        "image_url": [f"https://cdn.{brands[a].lower()}.example.com/img/{cid}.jpg" for a, cid in zip(r_adv, creative_ids)],
        "landing_url": [f"https://{brands[a].lower()}.example.com/c/{cid}" for a, cid in zip(r_adv, creative_ids)],
        "call_to_action": ctas,
        "price": r_price,
    })

    items = Items(
        kind=np.concatenate([np.zeros(n_r, np.int8), np.ones(n_p, np.int8)]),
        item_id=np.array(creative_ids + skus, dtype=object),
        category=np.concatenate([r_cat, p_cat]).astype(np.int32),
        brand=np.concatenate([r_adv, p_adv]).astype(np.int32),
        price=np.concatenate([r_price, p_price]),
        price_level=np.concatenate([np.where(has_p, p_level[np.maximum(r_prod, 0)], 0.5), p_level]).astype(np.float32),
        quality=np.concatenate([r_quality, p_quality]),
        # a creative without a product has no observable rating: the campaign store has no field
        # for one, so serving cannot send it and training must not see it either (0 = none)
        rating=np.concatenate([np.where(has_p, p_rating[np.maximum(r_prod, 0)], 0.0), p_rating]).astype(np.float32),
        campaign=np.concatenate([r_cmp, np.full(n_p, -1)]).astype(np.int32),
        advertiser=np.concatenate([r_adv, p_adv]).astype(np.int32),
        product=np.concatenate([r_prod, np.arange(n_p)]).astype(np.int32),
    )

    # -- users ---------------------------------------------------------------------------------
    users, latent = _users(config, tops, category_top, n_c, n_a, adv_top, scene_category)

    csr = {}
    for kind in (0, 1):
        idx = np.flatnonzero(items.kind == kind)
        order = idx[np.argsort(items.category[idx], kind="stable")]
        counts = np.bincount(items.category[order], minlength=n_c)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        csr[kind] = (order, starts, counts)
    index = {
        "category": cat_index,
        "category_top": category_top,
        "tops": tops,
        "item": {iid: i for i, iid in enumerate(items.item_id)},
        "user": {u: i for i, u in enumerate(users["user_id"].to_list())},
        "user_ids": users["user_id"].to_list(),
        "csr": csr,
    }
    return World(
        config=config, taxonomy=taxonomy, categories=categories, sensitive_categories=sensitive, brands=tuple(brands),
        scenes=tuple(s.name for s in V.SCENES), scene_category=scene_category, scene_hour=scene_hour,
        object_vocab=object_vocab, object_category=object_category, object_sensitive=object_sensitive,
        users=users, advertisers=advertisers, products=products, campaigns=campaigns, creatives=creatives,
        items=items, latent=latent, _index=index,
    )


def _group(keys: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n + 1))
    return [order[bounds[i]:bounds[i + 1]] for i in range(n)]


def _price_level(cat: np.ndarray, price: np.ndarray, n_c: int) -> np.ndarray:
    """Quantile of each price within its category (0 = cheapest, 1 = dearest)."""
    level = np.full(len(price), 0.5, dtype=np.float32)
    order = np.lexsort((price, cat))
    sorted_cat = cat[order]
    starts = np.searchsorted(sorted_cat, np.arange(n_c))
    ends = np.searchsorted(sorted_cat, np.arange(n_c), side="right")
    for c in range(n_c):
        s, e = starts[c], ends[c]
        if e - s > 1:
            level[order[s:e]] = np.arange(e - s) / (e - s - 1)
    return level


def _users(config: WorldConfig, tops, category_top, n_c: int, n_brands: int, adv_top, scene_category):
    rng = _rng(config.seed, 5)
    n_u, n_t = config.n_users, len(tops)
    # interests: 2 favourite tops (+0.6 on all their leaves), 5 favourite leaves (+1.5), small noise elsewhere
    interest = rng.normal(0.0, 0.3, (n_u, n_c)).astype(np.float32)
    t1 = rng.integers(0, n_t, n_u)
    fav_tops = np.stack([t1, (t1 + rng.integers(1, n_t, n_u)) % n_t], axis=1)
    top_boost = np.zeros((n_u, n_t), dtype=np.float32)
    np.put_along_axis(top_boost, fav_tops, 0.6, axis=1)
    interest += top_boost[:, category_top]
    # favourite leaves: mostly inside the favourite tops
    leaf_order = np.argsort(category_top, kind="stable")
    leaf_counts = np.bincount(category_top, minlength=n_t)
    leaf_starts = np.concatenate([[0], np.cumsum(leaf_counts)[:-1]])
    fav_leaves = np.empty((n_u, 5), dtype=np.int64)
    for j in range(5):
        in_fav = rng.random(n_u) < 0.75
        t = fav_tops[np.arange(n_u), rng.integers(0, 2, n_u)]
        pick_in = leaf_order[leaf_starts[t] + (rng.random(n_u) * leaf_counts[t]).astype(np.int64)]
        fav_leaves[:, j] = np.where(in_fav, pick_in, rng.integers(0, n_c, n_u))
    rows = np.repeat(np.arange(n_u), 5)
    np.add.at(interest, (rows, fav_leaves.ravel()), 1.5)
    # brands: a handful of liked brands, mostly in the favourite tops
    brand = np.zeros((n_u, n_brands), dtype=np.float32)
    liked = rng.integers(0, n_brands, (n_u, 3))
    np.put_along_axis(brand, liked, 1.0, axis=1)
    brand_in_fav = (adv_top[None, :] == fav_tops[:, :1]) | (adv_top[None, :] == fav_tops[:, 1:2])
    brand += 0.3 * brand_in_fav
    price_level = rng.beta(2.0, 2.0, n_u).astype(np.float32)
    price_sens = rng.gamma(2.0, 0.5, n_u).astype(np.float32)
    bias = rng.normal(0.0, 0.25, n_u).astype(np.float32)
    activity = np.exp(rng.normal(np.log(8.0), 0.7, n_u)).astype(np.float32)
    # scenes a user frequents follow their interests (soft), plus a personal habit
    aff = np.exp(interest) @ (scene_category.T / np.maximum(scene_category.sum(axis=1), 1e-6))  # (n_u, n_s)
    habit = rng.gamma(1.0, 1.0, aff.shape)
    scene_pref = aff / aff.sum(axis=1, keepdims=True) * 0.6 + habit / habit.sum(axis=1, keepdims=True) * 0.4
    scene_pref = scene_pref.astype(np.float32)

    device = np.where(rng.random(n_u) < config.glasses_share, "glasses", "phone")
    region_i = rng.integers(0, len(V.REGIONS), n_u)
    profile_i = rng.choice(3, n_u, p=np.asarray(config.consent_mix) / sum(config.consent_mix))
    profile = np.array(V.CONSENT_PROFILES)[profile_i]
    users = pl.DataFrame({
        "user_id": [f"u{i:06d}" for i in range(n_u)],
        "device": device,
        "region": np.array([r for r, _ in V.REGIONS])[region_i],
        "utc_offset_h": np.array([o for _, o in V.REGIONS], dtype=np.int32)[region_i],
        "consent_profile": profile,
        "consent_context": profile_i <= 1,
        "consent_personalization": profile_i == 0,
        "consent_measurement": profile_i == 0,
        "activity_per_day": activity,
    })
    latent = Latent(interest, brand, price_level, price_sens, bias, activity, scene_pref)
    return users, latent
