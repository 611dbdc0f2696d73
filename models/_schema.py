"""What a ranking model sees: the sparse (hashed id) and dense features, and how rows become them.

One code path for training and serving: every sparse feature is a pure function from a
row's raw values to a list of hashed bucket ids (``SparseFeature.ids``). Training applies
it to the *unique* source values of a column (thousands, not millions) and joins back;
serving applies it per row with a cache (request-level values repeat over candidates).
Dense features are one numpy function over named columns, used by both.

Ids are hashed (crc32 of ``"<feature>\\x1f<value>"`` modulo the table size) rather than
remapped by TorchRec's managed-collision modules: see docs/models.md, "Hashing".
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from itertools import chain
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from models.errors import InvalidModelInput

_TOKEN = re.compile(r"[a-z][a-z_]+")
_STOP = frozenset(
    "the a an and or for to of in on at is are i me my we you it this that need want some with "
    "under over from please find show looking look get buy new good best any".split()
)


def bucket(feature: str, value: str, size: int) -> int:
    """Stable hashed id of ``value`` in ``feature``'s table (same on every host and version)."""
    return zlib.crc32(f"{feature}\x1f{value}".encode()) % size


def intent_tokens(text: str | None, limit: int = 8) -> list[str]:
    """Content words of the spoken intent (lower-case, no numbers or stop words), first ``limit``."""
    if not text:
        return []
    out: list[str] = []
    for tok in _TOKEN.findall(text.lower()):
        if tok not in _STOP and tok not in out:
            out.append(tok)
            if len(out) == limit:
                break
    return out


def _single(v) -> list[str]:
    return [] if v is None or v == "" else [str(v)]


def _top_and_leaf(v) -> list[str]:
    if not v:
        return []
    v = str(v)
    top = v.split("/", 1)[0]
    return [v, f"top:{top}"] if top != v else [v]


def _multi(v) -> list[str]:
    if v is None:
        return []
    return sorted({str(x) for x in v if x})


def _device(v) -> list[str]:
    # serving may hand the proto enum name ("GLASSES", "DEVICE_UNSPECIFIED"); the log has "glasses"
    if v is None or v == "":
        return []
    v = str(v).lower().removeprefix("device_")
    return [] if v == "unspecified" else [v]


def _cross(a, b) -> list[str]:
    return [] if not a or not b else [f"{a}|{b}"]


def _device_x(d, category) -> list[str]:
    dev = _device(d)
    return _cross(dev[0], category) if dev else []


def _hour(v) -> list[str]:
    return [] if v is None else [str(int(v))]


def _user(user_id, consent) -> list[str]:
    # The pseudonymous user id becomes a feature only under personalization consent.
    return [str(user_id)] if user_id and bool(consent) else []


def _top_key(category):
    """What ``_objects_x_category`` and ``_intent_x_category`` read of a category: its top."""
    return None if not category else str(category).split("/", 1)[0]


def _objects_x_category(objects, category) -> list[str]:
    if not objects or not category:
        return []
    top = str(category).split("/", 1)[0]
    return sorted({f"{o}|{top}" for o in objects if o})


def _intent_x_category(text, category) -> list[str]:
    if not category:
        return []
    top = str(category).split("/", 1)[0]
    return [f"{t}|{top}" for t in intent_tokens(text)]


@dataclass(frozen=True)
class SparseFeature:
    """One embedding table: its name, size (hash buckets) and the raw columns it reads."""

    name: str
    num_embeddings: int
    sources: tuple[str, ...]
    """Raw row keys passed, in order, to ``values``."""
    values: Callable[..., list[str]] = field(compare=False)
    """Raw values → the string tokens of this feature (before hashing)."""
    request_level: bool = False
    """True when it reads only request context (so serving computes it once per request)."""
    item_key: tuple[str, Callable] | None = field(default=None, compare=False)
    """(an item column among ``sources``, a function of its value) when ``values`` reads that
    column only through the function (``objects_x_category`` reads a category's top only):
    serving's catalog path then computes a cross once per distinct key among a request's
    candidates rather than once per distinct value. Pinned by test_models_features.py."""

    def ids(self, *raw) -> list[int]:
        return [bucket(self.name, v, self.num_embeddings) for v in self.values(*raw)]


# Table sizes are a product decision: the smallest power of two that keeps the share of
# ids sharing a row with another id under ~5 % for the id spaces of the default world
# (share ≈ 1 - exp(-distinct / rows); distinct values measured on a 200k-request log, in
# brackets), and collision-free for the closed vocabularies (hour, weekday, device, item
# kind, location: pinned by tests/unit/models/test_models_features.py). The earlier 65,536
# item rows put 52 % of the 52k items on a shared row, and "glasses"/"phone" on one row.
SPARSE_FEATURES: tuple[SparseFeature, ...] = (
    SparseFeature("item", 1 << 20, ("item_id",), _single),                            # 53k items: 4.9 %
    SparseFeature("advertiser", 1 << 13, ("advertiser_id",), _single),                # 300: 3.6 %
    SparseFeature("campaign", 1 << 15, ("campaign_id",), _single),                    # 1k: 3.0 %
    SparseFeature("category", 1 << 13, ("category",), _top_and_leaf),                 # 199 leaves+tops: 2.4 %
    SparseFeature("brand", 1 << 14, ("brand",), _single),                             # 300: 1.8 %
    SparseFeature("item_kind", 8, ("item_kind",), _single),                           # closed (2)
    SparseFeature("scene", 1 << 9, ("scene",), _single, request_level=True),          # 14: 2.7 %
    SparseFeature("objects", 1 << 13, ("objects",), _multi, request_level=True),      # 242: 2.9 %
    SparseFeature("intent", 1 << 15, ("intent_text",), intent_tokens, request_level=True),  # 521, open: 1.6 %
    SparseFeature("intent_category", 1 << 13, ("intent_category",), _top_and_leaf, request_level=True),  # 199: 2.4 %
    SparseFeature("location", 128, ("location_category",), _single, request_level=True),    # closed (26)
    SparseFeature("region", 1 << 10, ("region",), _single, request_level=True),       # 15: 1.5 %
    SparseFeature("hour", 64, ("local_hour",), _hour, request_level=True),            # closed (24)
    SparseFeature("weekday", 8, ("local_weekday",), _hour, request_level=True),       # closed (7)
    SparseFeature("device", 64, ("device",), _device, request_level=True),            # closed (2)
    SparseFeature("user", 1 << 19, ("user_id", "consent_personalization"), _user, request_level=True),  # 20k: 3.7 %
    # Context x item crosses: the contextual match is the main signal, so give it ids directly.
    SparseFeature("scene_x_category", 1 << 16, ("scene", "category"), _cross),                 # 2.5k: 3.7 %
    SparseFeature("objects_x_category", 1 << 17, ("objects", "category"), _objects_x_category,    # 4.5k: 3.4 %
                  item_key=("category", _top_key)),
    SparseFeature("intent_x_category", 1 << 18, ("intent_text", "category"), _intent_x_category,  # 9.9k: 3.7 %
                  item_key=("category", _top_key)),
    SparseFeature("location_x_category", 1 << 16, ("location_category", "category"), _cross),  # 2.1k: 3.2 %
    SparseFeature("intent_category_x_category", 1 << 20, ("intent_category", "category"), _cross),  # 32k: 3.0 %
    SparseFeature("device_x_category", 1 << 13, ("device", "category"), _device_x),  # 358: 4.3 %
)


_NUMBER = re.compile(r"(\d+(?:[.,]\d+)?)")


def _intent_match(intent_category, category) -> float:
    return 1.0 if intent_category and category and intent_category == category else 0.0


def _intent_top_match(intent_category, category) -> float:
    if not intent_category or not category or intent_category == category:
        return 0.0
    return 1.0 if str(intent_category).split("/", 1)[0] == str(category).split("/", 1)[0] else 0.0


def _intent_brand(text, brand) -> float:
    return 1.0 if text and brand and str(brand).lower() in str(text).lower() else 0.0


def _price_cap(text) -> float:
    """A spoken price cap ("under 100 euros") as a number; 0 when the intent names none."""
    if not text:
        return 0.0
    m = _NUMBER.search(str(text))
    return float(m.group(1).replace(",", ".")) if m else 0.0


@lru_cache(maxsize=8192)
def _singular(word: str) -> str:
    """``running_shoes`` → ``running_shoe``: detectors name one object, taxonomy leaves are plural."""
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "shes", "ches")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _leaf_key(category):
    """What ``_object_match`` reads of a category: its leaf, singular."""
    return None if not category else _singular(str(category).rsplit("/", 1)[-1])


def _object_leaves(objects) -> frozenset[str]:
    """The detected objects in singular form: the ``_leaf_key`` values ``_object_match`` matches."""
    return frozenset(_singular(str(o)) for o in objects if o) if objects else frozenset()


def _object_match(objects, category) -> float:
    # Compared in singular form on both sides: a plain ``o == leaf`` missed every plural
    # leaf ("tire" vs "auto/tires"), i.e. most of them (test AUC +0.008 once fixed).
    return 1.0 if _leaf_key(category) in _object_leaves(objects) else 0.0


_CHEAP = re.compile(r"\b(cheap|cheaper|affordable|budget|inexpensive)\b")
_PREMIUM = re.compile(r"\b(premium|high-end|luxury|luxurious|top-end)\b")


def _price_word(text) -> float:
    """-1 when the intent asks for something cheap, +1 for premium, 0 otherwise."""
    if not text:
        return 0.0
    t = str(text).lower()
    return -1.0 if _CHEAP.search(t) else (1.0 if _PREMIUM.search(t) else 0.0)


@dataclass(frozen=True)
class DerivedColumn:
    """A numeric column computed from raw (string/list) values of a row, before ``dense_matrix``."""

    name: str
    sources: tuple[str, ...]
    fn: Callable[..., float] = field(compare=False)
    item_key: tuple[str, Callable] | None = field(default=None, compare=False)
    """As ``SparseFeature.item_key``."""
    matches: Callable | None = field(default=None, compare=False)
    """For a column of one context and one item source with an ``item_key``, when ``fn`` is
    1.0 exactly if the item's key is in ``matches(context value)``, else 0.0: serving then
    fills a new context value's column for every item at once (detected objects differ in
    almost every request)."""


DERIVED_COLUMNS: tuple[DerivedColumn, ...] = (
    DerivedColumn("intent_match", ("intent_category", "category"), _intent_match),
    DerivedColumn("intent_top_match", ("intent_category", "category"), _intent_top_match),
    DerivedColumn("intent_brand", ("intent_text", "brand"), _intent_brand),
    DerivedColumn("price_cap", ("intent_text",), _price_cap),
    DerivedColumn("object_match", ("objects", "category"), _object_match, item_key=("category", _leaf_key),
                  matches=_object_leaves),
    DerivedColumn("price_word", ("intent_text",), _price_word),
)

# Raw numeric columns a row may carry (missing → 0). Names follow the Feast views, prefixed
# by the view they come from: item_stats → item_*, campaign_stats → campaign_*,
# context_popularity → ctx_*, user_engagement → user_* (only under personalization consent).
COUNT_COLUMNS: tuple[str, ...] = (
    "item_impressions_1h", "item_clicks_1h", "item_impressions_24h", "item_clicks_24h", "item_conversions_24h",
    "campaign_impressions_24h", "campaign_clicks_24h", "campaign_conversions_24h",
    "ctx_events_24h", "ctx_clicks_24h",
    "user_impressions_24h", "user_clicks_24h", "user_impressions_7d", "user_clicks_7d", "user_category_clicks_7d",
)
RAW_DENSE_COLUMNS: tuple[str, ...] = (
    "price", "rating", "consent_personalization", "position", "prior_exposures") + COUNT_COLUMNS

DENSE_FEATURES: tuple[str, ...] = (
    "log_price", "has_price", "personalized", "log_position", "log_prior_exposures",
    "intent_match", "intent_top_match", "intent_brand", "object_match", "has_price_cap", "over_price_cap",
    "rating_logit", "has_rating", "price_z", "price_word", "price_word_x_price_z",
    "log_item_impressions_1h", "log_item_impressions_24h", "log_item_clicks_24h",
    "item_ctr_1h", "item_ctr_24h", "item_cvr_24h",
    "log_campaign_impressions_24h", "campaign_ctr_24h", "campaign_cvr_24h",
    "log_ctx_events_24h", "ctx_ctr_24h",
    "user_ctr_7d", "user_ctr_24h", "log_user_category_clicks_7d",
)
# Not dense inputs: the user's raw 7-day impression and click counts. They track how long
# the log has run as much as the user (on a week-long log the windows never fill: +0.7
# sd from the training to the test days), and the network's predictions drifted with
# them; the smoothed 7-day CTR carries the user signal (with them zeroed: test AUC
# 0.7603 -> 0.7618, calibration 0.930 -> 0.942 on the default world).

_PRIOR_STRENGTH = 20.0


def _logit_smoothed(clicks: np.ndarray, shows: np.ndarray, prior: float) -> np.ndarray:
    p = (clicks + _PRIOR_STRENGTH * prior) / (shows + _PRIOR_STRENGTH)
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


class DenseInputs:
    """The raw numeric columns of ``n`` rows as dense features read them: each cleaned once
    (missing → 0, non-finite → 0), with the intermediates several features share."""

    def __init__(self, cols: Mapping[str, np.ndarray], n: int, prior_ctr: float, prior_cvr: float) -> None:
        self.cols, self.n, self.prior_ctr, self.prior_cvr = cols, n, prior_ctr, prior_cvr
        self._clean: dict[str, np.ndarray] = {}

    def __call__(self, name: str) -> np.ndarray:
        a = self._clean.get(name)
        if a is None:
            v = self.cols.get(name)
            if v is None:
                a = np.zeros(self.n, dtype=np.float64)
            else:
                a = np.asarray(v, dtype=np.float64)
                if not np.isfinite(a).all():
                    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            self._clean[name] = a
        return a

    def _shared(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        a = self._clean.get(key)
        if a is None:
            a = self._clean[key] = make()
        return a

    def price(self) -> np.ndarray:
        return self._shared(" price", lambda: np.maximum(self("price"), 0.0))

    def has_rating(self) -> np.ndarray:
        return self._shared(" has_rating", lambda: (self("rating") > 0).astype(np.float64))

    def consent(self) -> np.ndarray:
        return self._shared(" consent", lambda: self("consent_personalization") > 0)

    def user(self, name: str) -> np.ndarray:
        """A user column, zeroed without personalization consent."""
        return np.where(self.consent(), self(name), 0.0)


@dataclass(frozen=True)
class DenseFeature:
    """One dense feature: the raw columns it reads (``sources``, all of them) and how.

    ``sources`` must name every column ``fn`` reads (pinned by
    tests/unit/models/test_models_features.py): serving's catalog path computes a feature
    that reads only item attributes once per catalog, one that reads only the request
    context once per request, and the rest per candidate (``models._items``)."""

    name: str
    sources: tuple[str, ...]
    fn: Callable[[DenseInputs], np.ndarray] = field(compare=False)
    form: tuple | None = None
    """``("log1p", column, gated)`` or ``("ctr", clicks, shows, prior, gated)`` (``gated``:
    a user column, zeroed without consent) for the features ``fn`` computes that way:
    serving computes all features of one form in one matrix operation (``models._items``)."""


def _rating_logit(c: DenseInputs) -> np.ndarray:
    rating = np.clip(c("rating"), 0.01, 0.99)
    return np.log(rating / (1.0 - rating)) * c.has_rating()


def _ctr(name: str, clicks: str, shows: str, prior: str = "prior_ctr", gated: bool = False) -> DenseFeature:
    """The smoothed CTR logit of two count columns (``prior``: ``prior_ctr`` or ``prior_cvr``)."""
    if gated:
        return DenseFeature(name, (_CONSENT, clicks, shows),
                            lambda c: _logit_smoothed(c.user(clicks), c.user(shows), getattr(c, prior)),
                            ("ctr", clicks, shows, prior, True))
    return DenseFeature(name, (clicks, shows), lambda c: _logit_smoothed(c(clicks), c(shows), getattr(c, prior)),
                        ("ctr", clicks, shows, prior, False))


def _log_count(name: str, column: str, gated: bool = False) -> DenseFeature:
    if gated:
        return DenseFeature(name, (_CONSENT, column), lambda c: np.log1p(c.user(column)), ("log1p", column, True))
    return DenseFeature(name, (column,), lambda c: np.log1p(c(column)), ("log1p", column, False))


def _copy(name: str) -> Callable[[DenseInputs], np.ndarray]:
    return lambda c: c(name)


_CONSENT = "consent_personalization"

# CTRs are smoothed towards the global prior (so a new item reads as average, not 0) and
# given as logits; counts as log1p. User columns are zeroed without personalization consent.
DENSE_SPECS: tuple[DenseFeature, ...] = (
    DenseFeature("log_price", ("price",), lambda c: np.log1p(c.price())),
    DenseFeature("has_price", ("price",), lambda c: (c.price() > 0).astype(np.float64)),
    DenseFeature("personalized", (_CONSENT,), lambda c: c.consent().astype(np.float64)),
    DenseFeature("log_position", ("position",), lambda c: np.log1p(np.maximum(c("position"), 0.0))),
    DenseFeature("log_prior_exposures", ("prior_exposures",),
                 lambda c: np.log1p(np.maximum(c("prior_exposures"), 0.0))),
    DenseFeature("intent_match", ("intent_match",), _copy("intent_match")),
    DenseFeature("intent_top_match", ("intent_top_match",), _copy("intent_top_match")),
    DenseFeature("intent_brand", ("intent_brand",), _copy("intent_brand")),
    DenseFeature("object_match", ("object_match",), _copy("object_match")),
    DenseFeature("has_price_cap", ("price_cap",), lambda c: (c("price_cap") > 0).astype(np.float64)),
    DenseFeature("over_price_cap", ("price_cap", "price"),
                 lambda c: ((c("price_cap") > 0) & (c.price() > c("price_cap"))).astype(np.float64)),
    DenseFeature("rating_logit", ("rating",), _rating_logit),
    DenseFeature("has_rating", ("rating",), lambda c: c.has_rating()),
    DenseFeature("price_z", ("price_z",), _copy("price_z")),
    DenseFeature("price_word", ("price_word",), _copy("price_word")),
    DenseFeature("price_word_x_price_z", ("price_word", "price_z"), lambda c: c("price_word") * c("price_z")),
    _log_count("log_item_impressions_1h", "item_impressions_1h"),
    _log_count("log_item_impressions_24h", "item_impressions_24h"),
    _log_count("log_item_clicks_24h", "item_clicks_24h"),
    _ctr("item_ctr_1h", "item_clicks_1h", "item_impressions_1h"),
    _ctr("item_ctr_24h", "item_clicks_24h", "item_impressions_24h"),
    _ctr("item_cvr_24h", "item_conversions_24h", "item_clicks_24h", "prior_cvr"),
    _log_count("log_campaign_impressions_24h", "campaign_impressions_24h"),
    _ctr("campaign_ctr_24h", "campaign_clicks_24h", "campaign_impressions_24h"),
    _ctr("campaign_cvr_24h", "campaign_conversions_24h", "campaign_clicks_24h", "prior_cvr"),
    _log_count("log_ctx_events_24h", "ctx_events_24h"),
    _ctr("ctx_ctr_24h", "ctx_clicks_24h", "ctx_events_24h"),
    _ctr("user_ctr_7d", "user_clicks_7d", "user_impressions_7d", gated=True),
    _ctr("user_ctr_24h", "user_clicks_24h", "user_impressions_24h", gated=True),
    _log_count("log_user_category_clicks_7d", "user_category_clicks_7d", gated=True),
)
assert tuple(f.name for f in DENSE_SPECS) == DENSE_FEATURES


def dense_matrix(cols: Mapping[str, np.ndarray], n: int, prior_ctr: float, prior_cvr: float) -> np.ndarray:
    """Raw numeric columns → the model's dense features (float32, rows × len(DENSE_FEATURES)),
    ``DENSE_SPECS`` in order."""
    inputs = DenseInputs(cols, n, prior_ctr, prior_cvr)
    return np.stack([f.fn(inputs) for f in DENSE_SPECS], axis=1).astype(np.float32)


@dataclass
class EncodedBatch:
    """Model input independent of any framework: dense matrix plus jagged sparse ids per feature."""

    dense: np.ndarray                                   # float32 [B, D], already normalised
    lengths: dict[str, np.ndarray]                      # feature → int32 [B]
    values: dict[str, np.ndarray]                       # feature → int64 [sum(lengths)]

    @property
    def size(self) -> int:
        return int(self.dense.shape[0])


@dataclass
class FeaturePipeline:
    """Fitted feature transform: priors and dense normalisation learnt on the training split.

    Saved as JSON next to every model; ``encode_frame`` (training, polars) and
    ``encode_rows`` (serving, dicts) give identical outputs for identical rows.
    """

    prior_ctr: float = 0.02
    prior_cvr: float = 0.05
    dense_mean: list[float] = field(default_factory=lambda: [0.0] * len(DENSE_FEATURES))
    dense_std: list[float] = field(default_factory=lambda: [1.0] * len(DENSE_FEATURES))
    dense_min: list[float] | None = None
    dense_max: list[float] | None = None
    """Training range of each dense feature: inputs are clipped to it, because counts keep
    growing over a log (7-day windows fill up) and a network extrapolates them linearly."""
    sparse: tuple[str, ...] = tuple(f.name for f in SPARSE_FEATURES)
    category_log_price: dict[str, list[float]] | None = None
    """Per category: mean and std of log price over the training split's distinct items.
    ``price_z`` (an item's price relative to its category) stands in for the simulator's
    price level, which users' price taste and "cheap"/"premium" intents act on."""

    @property
    def features(self) -> list[SparseFeature]:
        by = {f.name: f for f in SPARSE_FEATURES}
        return [by[n] for n in self.sparse]

    def to_dict(self) -> dict:
        return {"prior_ctr": self.prior_ctr, "prior_cvr": self.prior_cvr, "dense_mean": self.dense_mean,
                "dense_std": self.dense_std, "dense_min": self.dense_min, "dense_max": self.dense_max,
                "sparse": list(self.sparse), "dense": list(DENSE_FEATURES),
                "category_log_price": self.category_log_price}

    @classmethod
    def from_dict(cls, d: Mapping) -> "FeaturePipeline":
        if list(d.get("dense", DENSE_FEATURES)) != list(DENSE_FEATURES):
            raise InvalidModelInput("model was trained with other dense features than this code has; retrain it")
        return cls(prior_ctr=d["prior_ctr"], prior_cvr=d["prior_cvr"], dense_mean=list(d["dense_mean"]),
                   dense_std=list(d["dense_std"]), dense_min=d.get("dense_min"), dense_max=d.get("dense_max"),
                   sparse=tuple(d["sparse"]), category_log_price=d.get("category_log_price"))

    @classmethod
    def fit(cls, frame) -> "FeaturePipeline":
        """Priors and dense mean/std from a training frame (polars) with ``click``/``conversion``."""
        clicks = float(frame["click"].sum())
        prior_ctr = max(clicks / max(frame.height, 1), 1e-4)
        prior_cvr = max(float(frame["conversion"].sum()) / max(clicks, 1.0), 1e-4)
        pipe = cls(prior_ctr=prior_ctr, prior_cvr=prior_cvr, category_log_price=_category_log_price(frame))
        raw = pipe._raw_dense_frame(frame)
        pipe.dense_mean = [float(x) for x in raw.mean(axis=0)]
        pipe.dense_std = [float(max(x, 1e-6)) for x in raw.std(axis=0)]
        pipe.dense_min = [float(x) for x in raw.min(axis=0)]
        pipe.dense_max = [float(x) for x in raw.max(axis=0)]
        return pipe

    # -- dense ---------------------------------------------------------------------------------
    def price_z(self, categories: Sequence, price: np.ndarray) -> np.ndarray:
        """log price standardised within its category (training items); 0 when unknown, in [-3, 3]."""
        price = np.asarray(price, dtype=np.float64)
        out = np.zeros(len(price), dtype=np.float64)
        if not self.category_log_price or not len(price):
            return out
        cats = np.asarray(["" if c is None else str(c) for c in categories], dtype=object)
        uniq, inv = np.unique(cats, return_inverse=True)
        stats = np.array([self.category_log_price.get(c, (np.nan, np.nan)) for c in uniq], dtype=np.float64)
        mean, std = stats[inv, 0], stats[inv, 1]
        ok = (price > 0) & np.isfinite(mean)
        out[ok] = np.clip((np.log(price[ok]) - mean[ok]) / std[ok], -3.0, 3.0)
        return out

    def _raw_dense_frame(self, frame) -> np.ndarray:
        import polars as pl

        cols = {c: frame[c].cast(pl.Float64).fill_null(0.0).to_numpy() for c in RAW_DENSE_COLUMNS if c in frame.columns}
        for d in DERIVED_COLUMNS:
            cols[d.name] = _map_unique(frame, d.sources, d.fn, pl.Float64).to_numpy()
        if "category" in frame.columns and "price" in frame.columns:
            cols["price_z"] = self.price_z(frame["category"].cast(pl.String).to_list(), cols["price"])
        return dense_matrix(cols, frame.height, self.prior_ctr, self.prior_cvr)

    def _normalise(self, raw: np.ndarray) -> np.ndarray:
        if self.dense_min is not None and self.dense_max is not None:
            raw = np.clip(raw, np.asarray(self.dense_min, dtype=np.float32), np.asarray(self.dense_max, dtype=np.float32))
        return ((raw - np.asarray(self.dense_mean, dtype=np.float32)) / np.asarray(self.dense_std, dtype=np.float32)).astype(np.float32)

    # -- training path ---------------------------------------------------------------------------
    def encode_frame(self, frame) -> EncodedBatch:
        """A polars frame of impressions (raw columns) → ``EncodedBatch``; vectorised via unique values."""
        import polars as pl

        lengths: dict[str, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}
        for feat in self.features:
            joined = _map_unique(frame, feat.sources, feat.ids, pl.List(pl.Int64))
            lengths[feat.name] = joined.list.len().to_numpy().astype(np.int32)
            values[feat.name] = joined.explode().drop_nulls().to_numpy().astype(np.int64)
        dense = self._normalise(self._raw_dense_frame(frame))
        return EncodedBatch(dense=dense, lengths=lengths, values=values)

    # -- serving path ----------------------------------------------------------------------------
    def encode_rows(self, rows: Sequence[Mapping], cache: dict | None = None) -> EncodedBatch:
        """Plain dict rows (request context merged with candidate attributes) → ``EncodedBatch``."""
        n = len(rows)
        cache = {} if cache is None else cache
        lengths: dict[str, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}
        for feat in self.features:
            lens = np.empty(n, dtype=np.int32)
            vals: list[int] = []
            for i, row in enumerate(rows):
                raw = tuple(row.get(c) for c in feat.sources)
                key = (feat.name, tuple(tuple(r) if isinstance(r, list) else r for r in raw))
                ids = cache.get(key)
                if ids is None:
                    ids = feat.ids(*raw)
                    if len(cache) < 200_000:
                        cache[key] = ids
                lens[i] = len(ids)
                vals.extend(ids)
            lengths[feat.name] = lens
            values[feat.name] = np.asarray(vals, dtype=np.int64)
        cols = {c: np.fromiter((_num(r.get(c)) for r in rows), dtype=np.float64, count=n) for c in RAW_DENSE_COLUMNS}
        for d in DERIVED_COLUMNS:
            out = np.empty(n, dtype=np.float64)
            for i, row in enumerate(rows):
                raw = tuple(row.get(c) for c in d.sources)
                key = (d.name, tuple(tuple(r) if isinstance(r, list) else r for r in raw))
                v = cache.get(key)
                if v is None:
                    v = d.fn(*raw)
                    if len(cache) < 200_000:
                        cache[key] = v
                out[i] = v
            cols[d.name] = out
        cols["price_z"] = self.price_z([r.get("category") for r in rows], cols["price"])
        dense = self._normalise(dense_matrix(cols, n, self.prior_ctr, self.prior_cvr))
        return EncodedBatch(dense=dense, lengths=lengths, values=values)


    # -- serving fast path: one request ------------------------------------------------------------
    def encode_request(self, context: Mapping, candidates: Sequence[Mapping], cache: dict | None = None) -> EncodedBatch:
        """Same result as ``encode_rows([{**context, **c} for c in candidates])``, faster.

        Features reading only request context are computed once and broadcast; the others
        are computed once per distinct candidate-side value (crosses with the context are
        cached per request, plain candidate ids across requests in ``cache``).
        """
        keys = set().union(*(c.keys() for c in candidates)) if candidates else set()
        columns = {}
        for c in keys:
            default = context.get(c)
            columns[c] = [cand.get(c, default) for cand in candidates]
        return self.encode_columns(context, columns, len(candidates), cache)

    def encode_columns(self, context: Mapping, columns: Mapping[str, list], n: int,
                       cache: dict | None = None) -> EncodedBatch:
        """``encode_request`` with the candidates given as columns (``key → n values``, a
        candidate without the key holding ``context.get(key)``): serving has its candidates
        as plain objects and builds columns directly, without ~240 dicts per request."""
        cache = {} if cache is None else cache
        cand_keys = columns.keys()
        local: dict = {}
        hashable: dict[str, list] = {}
        lengths: dict[str, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}

        def col(c: str) -> list:
            v = hashable.get(c)
            if v is None:
                v = columns[c]
                if list in set(map(type, v)):
                    v = [_hashable(x) for x in v]
                hashable[c] = v
            return v

        def run(name: str, sources: tuple[str, ...], fn: Callable) -> list:
            side = [c for c in sources if c in cand_keys]
            if not side:
                return [fn(*(context.get(c) for c in sources))] * n
            # crosses with the context are valid for this request only; pure candidate values forever
            store = (cache if len(side) == len(sources) else local).setdefault(("request", name), {})
            single = len(side) == 1
            keys = col(side[0]) if single else list(zip(*(col(c) for c in side)))
            get, out = store.get, []
            append = out.append
            for k in keys:
                v = get(k)
                if v is None:
                    given = dict(zip(side, (k,) if single else k))
                    v = fn(*(given[c] if c in given else context.get(c) for c in sources))
                    if len(store) < 100_000:
                        store[k] = v
                append(v)
            return out

        for feat in self.features:
            ids = run(feat.name, feat.sources, feat.ids)
            lengths[feat.name] = np.fromiter(map(len, ids), dtype=np.int32, count=n)
            values[feat.name] = np.fromiter(chain.from_iterable(ids), dtype=np.int64)
        cols = {}
        for c in RAW_DENSE_COLUMNS:
            if c in cand_keys:
                cols[c] = np.fromiter(map(_num, col(c)), dtype=np.float64, count=n)
            else:
                cols[c] = np.full(n, _num(context.get(c)))
        for d in DERIVED_COLUMNS:
            cols[d.name] = np.asarray(run(d.name, d.sources, d.fn), dtype=np.float64)
        cols["price_z"] = self.price_z(col("category") if "category" in cand_keys else [context.get("category")] * n,
                                       cols["price"])
        dense = self._normalise(dense_matrix(cols, n, self.prior_ctr, self.prior_cvr))
        return EncodedBatch(dense=dense, lengths=lengths, values=values)


def _category_log_price(frame) -> dict[str, list[float]] | None:
    """Mean/std of log price per category over distinct priced items (≥ 3 items; std ≥ 0.05)."""
    import polars as pl

    if not {"category", "price", "item_id"} <= set(frame.columns):
        return None
    items = frame.filter(pl.col("price") > 0).unique("item_id").select(
        pl.col("category").cast(pl.String), pl.col("price").cast(pl.Float64).log().alias("lp"))
    stats = items.group_by("category").agg(pl.col("lp").mean().alias("m"), pl.col("lp").std().alias("s"),
                                           pl.len().alias("n")).filter(pl.col("n") >= 3)
    return {c: [float(m), float(max(sd or 0.0, 0.05))] for c, m, sd in stats.select("category", "m", "s").iter_rows()
            if c}


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _map_unique(frame, sources: Sequence[str], fn: Callable, dtype):
    """``fn(*row[sources])`` for every row of a polars frame, calling ``fn`` once per distinct value."""
    import polars as pl

    missing = [pl.lit(None, pl.String).alias(c) for c in sources if c not in frame.columns]
    src = (frame.with_columns(missing) if missing else frame).select(list(sources))
    key_exprs = []
    for c in sources:
        if isinstance(src.schema[c], pl.List):
            key_exprs.append(pl.col(c).list.sort().list.join("\x1f").fill_null("").alias(f"__k_{c}"))
        else:
            key_exprs.append(pl.col(c).cast(pl.String).fill_null("\x00").alias(f"__k_{c}"))
    keys = src.with_columns(key_exprs)
    kcols = [f"__k_{c}" for c in sources]
    uniq = keys.unique(subset=kcols, keep="first", maintain_order=False)
    out = [fn(*row) for row in uniq.select(list(sources)).iter_rows()]
    uniq = uniq.select(kcols).with_columns(pl.Series("__out", out, dtype=dtype))
    return keys.select(kcols).join(uniq, on=kcols, how="left", maintain_order="left")["__out"]


def _num(v) -> float:
    if v is None:
        return 0.0
    try:
        return float(v)
    except (TypeError, ValueError):
        raise InvalidModelInput(f"expected a number, got {v!r}; pass numeric feature values") from None
