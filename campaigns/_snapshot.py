"""Serving's read side: an immutable in-memory snapshot of what may serve, kept fresh.

A ``CampaignSnapshot`` holds the ACTIVE campaigns (with creatives, targeting, budgets,
caps, bids), the advertisers and the whole product catalog, plus a few indexes. It never
changes after it is built, so request threads read it without locks; the
``SnapshotCache`` swaps in a new one (one attribute assignment) when the store's version
counters say something changed. The catalog is reused when only campaigns changed.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Callable, Mapping

from campaigns._model import Advertiser, Campaign, Creative, Product

log = logging.getLogger(__name__)

_EMPTY: Mapping = MappingProxyType({})


@dataclass(frozen=True)
class CampaignSnapshot:
    """Everything serving needs from the campaign store, frozen at one version."""

    version: tuple[int, int]
    """``(campaigns_version, products_version)`` of the store when read."""
    loaded_at: datetime
    campaigns: Mapping[str, Campaign]
    """Campaigns with status ``active`` by id (check ``serves_at`` for schedule/dayparting)."""
    advertisers: Mapping[str, Advertiser]
    products: Mapping[str, Product]
    """The whole catalog by sku."""
    creatives: Mapping[str, Creative] = field(default_factory=lambda: _EMPTY)
    """Active campaigns' creatives by creative id."""
    products_by_category: Mapping[str, tuple[Product, ...]] = field(default_factory=lambda: _EMPTY)
    """In-stock (and preorder) products per leaf category."""
    campaigns_by_category: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: _EMPTY)
    """Campaign ids per targeted leaf *or top* category; ``"*"`` lists campaigns without category targeting."""

    def live(self, now: datetime, local_weekday: int, local_hour: int) -> list[Campaign]:
        """Active campaigns inside their schedule and dayparting at this moment."""
        return [c for c in self.campaigns.values() if c.serves_at(now, local_weekday, local_hour)]

    def campaigns_for_category(self, category: str) -> tuple[str, ...]:
        """Ids of campaigns targeting this leaf, its top, or no category at all."""
        top = category.split("/", 1)[0]
        return (self.campaigns_by_category.get(category, ()) + self.campaigns_by_category.get(top, ())
                + self.campaigns_by_category.get("*", ()))

    def __len__(self) -> int:
        return len(self.campaigns)


def _product_indexes(products: Mapping[str, Product]) -> Mapping[str, tuple[Product, ...]]:
    by_cat: dict[str, list[Product]] = defaultdict(list)
    for p in products.values():
        if p.availability != "out_of_stock":
            by_cat[p.category].append(p)
    return MappingProxyType({k: tuple(v) for k, v in by_cat.items()})


def load_snapshot(store, previous: CampaignSnapshot | None = None) -> CampaignSnapshot:
    """Read a new snapshot from ``store`` (a ``CampaignStore``).

    With ``previous``, the product catalog and its index are reused when the store's
    products version has not moved (the common case: a pause or budget change).
    """
    version, campaigns, advertisers = store._read_active()
    if previous is not None and previous.version[1] == version[1]:
        products, by_cat = previous.products, previous.products_by_category
    else:
        products = MappingProxyType({p.sku: p for p in store._read_products()})
        by_cat = _product_indexes(products)
    camp_by_cat: dict[str, list[str]] = defaultdict(list)
    creatives: dict[str, Creative] = {}
    for c in campaigns:
        for cat in c.targeting.categories or ("*",):
            camp_by_cat[cat].append(c.id)
        for cr in c.creatives:
            creatives[cr.id] = cr
    return CampaignSnapshot(
        version=version,
        loaded_at=datetime.now(timezone.utc),
        campaigns=MappingProxyType({c.id: c for c in campaigns}),
        advertisers=MappingProxyType({a.id: a for a in advertisers}),
        products=products,
        creatives=MappingProxyType(creatives),
        products_by_category=by_cat,
        campaigns_by_category=MappingProxyType({k: tuple(v) for k, v in camp_by_cat.items()}),
    )


class SnapshotCache:
    """Holds the current ``CampaignSnapshot`` and refreshes it in a background thread.

    Every ``refresh_s`` seconds the thread reads the store's two version counters (one
    cheap query); only when they moved does it load a new snapshot. So a pause, budget
    or targeting change is visible to ``get()`` within about ``refresh_s`` plus the load
    time (milliseconds for 1k campaigns). A failed refresh keeps the last good snapshot
    (logged as a warning, kept in ``last_error``) and is retried on the next tick.

    Usage::

        cache = SnapshotCache(store, refresh_s=settings.serving.snapshot_refresh_s).start()
        snap = cache.get()            # lock-free; keep the reference for one request
        ...
        cache.stop()
    """

    def __init__(self, store, *, refresh_s: float = 2.0,
                 on_refresh: Callable[[CampaignSnapshot], None] | None = None) -> None:
        if refresh_s <= 0:
            raise ValueError(f"refresh_s must be positive, got {refresh_s}; use e.g. 2.0")
        self._store = store
        self.refresh_s = refresh_s
        self._on_refresh = on_refresh
        self._snapshot: CampaignSnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()       # serialises refreshes, never taken by get()
        self.last_error: Exception | None = None
        self.refreshes = 0

    def get(self) -> CampaignSnapshot:
        """The current snapshot (loads the first one synchronously if needed)."""
        snap = self._snapshot
        if snap is None:
            self.refresh(force=True)
            snap = self._snapshot
        return snap  # type: ignore[return-value]

    def refresh(self, *, force: bool = False) -> bool:
        """Check the version and reload if it moved (or ``force``). Returns True if a new snapshot is in place."""
        with self._lock:
            current = self._snapshot
            if not force and current is not None and self._store.versions() == current.version:
                return False
            snap = load_snapshot(self._store, previous=current)
            self._snapshot = snap
            self.refreshes += 1
        log.debug("campaign snapshot refreshed to version %s (%d active campaigns)", snap.version, len(snap))
        if self._on_refresh is not None:
            self._on_refresh(snap)
        return True

    def start(self) -> "SnapshotCache":
        """Load the first snapshot now, then refresh in a daemon thread."""
        if self._thread is not None:
            return self
        self.get()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="campaign-snapshot", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> "SnapshotCache":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def age_s(self) -> float:
        """Seconds since the current snapshot was loaded."""
        snap = self._snapshot
        return float("inf") if snap is None else (datetime.now(timezone.utc) - snap.loaded_at).total_seconds()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # keep serving the last good snapshot
                if self.last_error is None:
                    log.warning("campaign snapshot refresh failed (keeping version %s): %s",
                                self._snapshot.version if self._snapshot else None, exc)
                self.last_error = exc
