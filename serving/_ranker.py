"""Rankers: the registry seam, and the context-relevance fallback.

``ContextRelevanceRanker`` is used only when no model is registered (a fresh install, or
the registry unreadable). It is a fixed logistic score — no training — of what the
request path already knows, so its pCTRs are plausible but uncalibrated:

    logit(pCTR) = -4.0 + 0.9 × relevance + 0.6 × (smoothed item CTR logit + 3.9)
                  + 0.5 × [the user engaged with the item's category]

``relevance`` is the context match computed by candidate generation (objects/intent/
scene/category hits); the smoothed CTR shrinks the item's 24 h clicks/impressions to a
2 % prior with 50 pseudo-impressions. Replies report ``model_version`` =
``context-relevance-v1`` so experiments and analyses can tell it apart.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable, Mapping, Sequence

import numpy as np

from serving._rows import CandidateRows
from serving.types import Ranker

log = logging.getLogger(__name__)

FALLBACK_VERSION = "context-relevance-v1"
_PRIOR_CTR, _PRIOR_N = 0.02, 50.0
_PRIOR_LOGIT = math.log(_PRIOR_CTR / (1 - _PRIOR_CTR))


class ContextRelevanceRanker:
    """The documented fallback ranker (see module docstring)."""

    version = FALLBACK_VERSION

    def score(self, rows: Sequence[Mapping]) -> list[float]:
        if isinstance(rows, CandidateRows):
            signals = rows.signals()          # the four inputs, without building the row dicts
        else:
            rows = list(rows)
            signals = ([float(r.get("relevance") or 0.0) for r in rows],
                       [float(r.get("item_impressions_24h") or 0.0) for r in rows],
                       [float(r.get("item_clicks_24h") or 0.0) for r in rows],
                       [bool(r.get("user_category_clicks_7d")) for r in rows])
        # vectorised: ~250 candidates per request; a Python loop over them cost ~5x more
        relevance, shows, clicks, engaged = (np.asarray(x, dtype=np.float64) for x in signals)
        p = np.clip((clicks + _PRIOR_N * _PRIOR_CTR) / (shows + _PRIOR_N), 1e-4, 1 - 1e-4)
        z = -4.0 + 0.9 * relevance + 0.6 * (np.log(p / (1 - p)) - _PRIOR_LOGIT) + 0.5 * engaged
        return (1.0 / (1.0 + np.exp(-z))).tolist()


class RegistryRankers:
    """Rankers by alias/version from the models registry, re-resolved every ``ttl_s``.

    ``resolve(ref)`` maps an alias or version to a version (cheap: reads aliases.json);
    ``load(version)`` loads a model (expensive: done once per version, so promoting a
    new model to ``production`` takes effect within ``ttl_s`` without a restart). When
    either raises (nothing registered, registry unreadable) the fallback ranker is
    used and the reason is kept in ``last_error``.
    """

    def __init__(self, registry=None, *, ttl_s: float = 30.0, fallback: Ranker | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._fallback = fallback or ContextRelevanceRanker()
        self._clock = clock
        self._refs: dict[str, tuple[Ranker, float]] = {}
        self._versions: dict[str, Ranker] = {}
        self._lock = threading.Lock()
        self.last_error: Exception | None = None

    @property
    def fallback(self) -> Ranker:
        return self._fallback

    def loaded(self) -> list[Ranker]:
        """The models loaded so far (one per version)."""
        return list(self._versions.values())

    def get(self, ref: str) -> Ranker:
        now = self._clock()
        hit = self._refs.get(ref)
        if hit is not None and hit[1] > now:
            return hit[0]
        with self._lock:
            hit = self._refs.get(ref)
            if hit is not None and hit[1] > now:
                return hit[0]
            ranker = self._load(ref)
            self._refs[ref] = (ranker, now + self._ttl_s)
            return ranker

    def _load(self, ref: str) -> Ranker:
        if self._registry is None:
            return self._fallback
        try:
            version = self._registry.resolve(ref)
            ranker = self._versions.get(version)
            if ranker is None:
                ranker = self._registry.load(version)
                self._versions = {**self._versions, version: ranker}
                log.info("ranker %s loaded for %r", version, ref)
        except Exception as exc:  # noqa: BLE001 - any registry problem means "use the fallback"
            if not isinstance(self.last_error, type(exc)):
                log.warning("no ranker for %r (%s); using %s", ref, exc, self._fallback.version)
            self.last_error = exc
            return self._fallback
        self.last_error = None
        return ranker


class ScorerRanker:
    """Adapts a ``models.Scorer`` (``score(rows)`` and ``score_columns(context, columns, n)`` ->
    ``(pctr, pcvr)``) to the ``Ranker`` protocol."""

    def __init__(self, scorer) -> None:
        self._scorer = scorer
        self.version = scorer.version

    def prepare(self, catalog) -> None:
        """Encode a new catalog's items now rather than in the next request: ~0.3 s for 53k
        items from scratch; after a campaign edit only the ads (the products' block is kept
        while the catalog keeps its product side)."""
        if catalog.items:
            side = getattr(catalog, "product_side", None)
            prefix = (side.columns, len(side.rows)) if side is not None else None
            self._scorer.item_block(catalog.items, len(catalog.items["item_id"]), prefix=prefix)

    def score(self, rows: Sequence[Mapping]) -> Sequence[float]:
        if isinstance(rows, CandidateRows):
            at = rows.catalog_rows()
            if at is not None:
                # the catalog's items are encoded once per snapshot; a request gathers its rows
                items, n_items, index, extra = at
                pctr, _ = self._scorer.score_items(rows.context, items, n_items, index, extra, cvr=False)
            else:
                # the request-level features are encoded once, the candidates' as columns
                pctr, _ = self._scorer.score_columns(rows.context, rows.columns(), len(rows))
        else:
            pctr, _ = self._scorer.score(list(rows))
        return pctr.tolist()


class ModelRegistry:
    """``models.Registry`` seen through ``resolve``/``load`` (imported lazily)."""

    def __init__(self, settings) -> None:
        from models import Registry

        self._registry = Registry(settings)
        self._threads = settings.serving.model_threads

    def resolve(self, ref: str) -> str:
        return self._registry.get(ref).version

    def load(self, version: str) -> Ranker:
        scorer = self._registry.load(version)
        if scorer.kind == "torchrec":
            import torch

            # process-wide: this process serves; see ServingSettings.model_threads
            torch.set_num_threads(self._threads)
        return ScorerRanker(scorer)


def registry_loader(settings):
    """The models registry for ``RegistryRankers`` (None when the models package is absent)."""
    try:
        return ModelRegistry(settings)
    except ImportError:
        return None
