"""The request's context, normalised once, and what it says about product categories.

``ContextIndex`` maps context words (detected objects, intent words, their pairs) to
taxonomy leaves. It is built from the taxonomy alone (leaf names, their singulars and
words), weighting a word by how few leaves share it, so "running shoes" points at
``sports/running_shoes`` while "food" spreads thinly over every ``*_food`` leaf.
Sensitive leaves are recognised so that they can be *dropped*: they never target, but
a campaign's brand-safety exclusions still see them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

_WORD = re.compile(r"[a-z][a-z_]+")
_STOP = frozenset(
    "the a an and or for to of in on at is are i me my we you it this that need want some with "
    "under over from please find show looking look get buy new good best any where can what there "
    "around here near nearest more about tell am deals today euros euro dollars nearby".split()
)
_PRICE = re.compile(r"(?:under|below|less than|max|up to)\s+(\d+(?:[.,]\d+)?)")

DEVICE_NAMES = {0: "", 1: "glasses", 2: "phone"}


def singular(word: str) -> str:
    """Crude English singular (``running_shoes`` → ``running_shoe``, ``batteries`` → ``battery``)."""
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "shes", "ches")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def words(text: str | None, limit: int = 12) -> tuple[str, ...]:
    """Content words of a text, lower-cased and singular, in order, without stop words."""
    if not text:
        return ()
    out: list[str] = []
    for tok in _WORD.findall(text.lower()):
        if tok in _STOP:
            continue
        tok = singular(tok)
        if tok not in out:
            out.append(tok)
            if len(out) == limit:
                break
    return tuple(out)


def price_cap(text: str | None) -> float | None:
    """'... under 100 euros' → 100.0 (used to prefer affordable suggestions)."""
    if not text:
        return None
    m = _PRICE.search(text.lower())
    return float(m.group(1).replace(",", ".")) if m else None


@dataclass(frozen=True)
class RequestContext:
    """What one Recommend request says about the user's situation (normalised)."""

    device: str = ""
    scene: str = ""
    objects: tuple[str, ...] = ()
    intent_text: str = ""
    intent_words: tuple[str, ...] = ()
    location_category: str = ""
    region: str = ""
    local_hour: int = 12
    local_weekday: int = 0
    categories: Mapping[str, float] = field(default_factory=dict)
    """Non-sensitive leaves the context points at → weight (objects and intent words)."""
    seen_categories: frozenset[str] = frozenset()
    """Every leaf the context points at, sensitive ones included (for brand-safety exclusions)."""
    sensitive: bool = False
    """Some sensitive signal was recognised and dropped."""
    price_cap: float | None = None

    @property
    def tokens(self) -> frozenset[str]:
        """Objects, intent words and the scene (all lower-case, singular)."""
        return frozenset(self.objects) | frozenset(self.intent_words) | ({self.scene} if self.scene else set())

    @property
    def top_category(self) -> str:
        return max(self.categories.items(), key=lambda kv: (kv[1], kv[0]))[0] if self.categories else ""


class ContextIndex:
    """Word → leaf weights built from a taxonomy (``campaigns.taxonomy.Taxonomy``)."""

    def __init__(self, taxonomy, sensitive_locations: Iterable[str] = ()) -> None:
        self._taxonomy = taxonomy
        self._sensitive_locations = frozenset(sensitive_locations)
        postings: dict[str, set[str]] = {}
        exact: dict[str, str] = {}
        for cat in taxonomy.leaves(include_sensitive=True):
            leaf = cat.leaf
            for name in {leaf, singular(leaf)}:
                exact.setdefault(name, cat.id)
            for w in leaf.split("_"):
                postings.setdefault(singular(w), set()).add(cat.id)
        self._exact = exact
        self._postings = {w: frozenset(c) for w, c in postings.items()}
        self._label = {c.id: c.label for c in taxonomy.leaves(include_sensitive=True)}

    def label(self, category_id: str) -> str:
        return self._label.get(category_id, category_id.split("/")[-1].replace("_", " "))

    def is_sensitive(self, category_id: str) -> bool:
        return self._taxonomy.is_sensitive(category_id)

    def leaves_for(self, tokens: Iterable[str]) -> dict[str, float]:
        """Leaf weights for context tokens: an exact leaf name counts 1, a shared word 1/(leaves sharing it)."""
        out: dict[str, float] = {}
        toks = [t.lower() for t in tokens if t]
        pairs = [f"{a}_{b}" for a, b in zip(toks, toks[1:])]
        for tok in toks + pairs:
            for cand in (tok, singular(tok)):
                cat = self._exact.get(cand)
                if cat:
                    out[cat] = out.get(cat, 0.0) + 1.0
                    break
            else:
                cats = self._postings.get(singular(tok), ())
                for cat in cats:
                    out[cat] = out.get(cat, 0.0) + 1.0 / len(cats)
        return out

    def context(self, *, device: str = "", scene: str = "", objects: Iterable[str] = (), intent_text: str = "",
                location_category: str = "", region: str = "", local_hour: int = 12, local_weekday: int = 0) -> RequestContext:
        """Normalise raw context values and infer its categories, dropping sensitive signals."""
        objs = tuple(dict.fromkeys(singular(o.strip().lower()) for o in objects if o and o.strip()))
        intent = words(intent_text)
        seen = self.leaves_for(objs)
        for cat, w in self.leaves_for(intent).items():
            seen[cat] = seen.get(cat, 0.0) + w
        sensitive_cats = {c for c in seen if self.is_sensitive(c)}
        sensitive = bool(sensitive_cats)
        location = location_category.strip().lower()
        if location in self._sensitive_locations:
            location, sensitive = "", True
        if sensitive_cats:
            # drop the objects and words that point at a sensitive leaf: never features, never targeting
            bad = {w for w in objs + intent if any(c in sensitive_cats for c in self.leaves_for([w]))}
            objs = tuple(o for o in objs if o not in bad)
            intent = tuple(w for w in intent if w not in bad)
        return RequestContext(
            device=device, scene=scene.strip().lower(), objects=objs, intent_text="" if sensitive_cats else intent_text,
            intent_words=intent, location_category=location, region=region.strip().upper(),
            local_hour=local_hour, local_weekday=local_weekday,
            categories={c: w for c, w in seen.items() if c not in sensitive_cats},
            seen_categories=frozenset(seen), sensitive=sensitive, price_cap=price_cap(intent_text),
        )
