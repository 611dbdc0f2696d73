"""The RecommendationService: Recommend and ReportFeedback.

Request path: validate → consent gate → experiment arms → context → user features
(Feast, only with personalization consent; context-only fallback when absent, when the
store is down or the deadline is short — counted) → candidates (targeted ads from the
campaign snapshot, products by contextual relevance) → frequency caps and pacing
participation → ONE batched ranker call → auction (reserve, quality floor, GSP, one ad
per advertiser) → pacing hard guard → reply with signed impression tokens → impression
and exposure events queued for Kafka (sent by a background thread).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Sequence

import numpy as np

from proto import events_pb2, serving_pb2, serving_pb2_grpc
from serving._ad_index import explain
from serving._auction import AuctionParams, Bidder, run_auction
from serving._caps import FrequencyCounter, is_capped
from serving._candidates import Catalog, ad_candidates, build_catalog, product_candidates
from serving._context import DEVICE_NAMES, ContextIndex
from serving._delivery import PacingBook
from serving._pacing import DAY_S
from serving._ranker import ContextRelevanceRanker
from serving._rows import CandidateRows, category_clicks
from serving._tokens import Impression, TokenSigner
from serving._validate import validate_feedback, validate_recommend
from serving.errors import DeadlineExceeded
from serving.types import EventSink, FrequencyStore, RankerSource

log = logging.getLogger(__name__)

_EVENT_NS = uuid.UUID("6f1d2c3e-5b4a-4e8f-9a7b-1c2d3e4f5a6b")
_KIND_NAME = {events_pb2.AD: "ad", events_pb2.PRODUCT: "product"}


def pseudonymize(user_id: str, key: str) -> str:
    """Keyed hash of the app's user id (``privacy.pseudonymize``): the only form serving
    stores (frequency counters) or looks up (Feast user rows)."""
    from privacy import pseudonymize as _pseudonymize

    return _pseudonymize(user_id, key)


@dataclass(frozen=True)
class Defaults:
    """Serving defaults an experiment arm may override."""

    ranker: str = "production"
    reserve_ecpm: float = 0.0
    quality_floor: float = 0.0
    exploration: float = 0.0
    ad_candidates: int = 50
    product_candidates: int = 200


@dataclass
class Counters:
    """Plain counters (read by ``stats()``, the benchmark and the tests)."""

    values: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.values[name] += n

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.values)


class Experiments:
    """Seam over ``experiments``: the arms of a request and their exposure logging."""

    def __init__(self, cache, sink: Callable[[object], None]) -> None:
        from experiments import ExposureLogger

        self._cache = cache
        self._logger = ExposureLogger(sink)

    def ranker_refs(self) -> set[str]:
        """Every model alias or version a running experiment's arm may ask for."""
        return {arm.params.ranker for exp in self._cache.running() for arm in exp.arms if arm.params.ranker}

    def assign(self, *, user_id: str, request_id: str, consent, unit_user_id: str | None = None) -> list:
        """Arms for this request. User units hash ``unit_user_id`` (the pseudonym, the only
        user id the logs keep, so analysis can re-derive every unit's arm); ``user_id``
        (the app's id) only rides on the exposure event, which ingestion pseudonymizes."""
        from experiments import assign_request

        assignments = assign_request(self._cache.running(), user_id=unit_user_id or user_id, request_id=request_id,
                                     personalization=consent.personalization)
        self._logger.log(assignments, user_id=user_id if consent.personalization else "", request_id=request_id,
                         consent=consent)
        return assignments


class RecommendationServicer(serving_pb2_grpc.RecommendationServiceServicer):
    def __init__(self, *, settings, snapshots, rankers: RankerSource, events: EventSink, taxonomy,
                 user_features=None, item_features=None, experiments: Experiments | None = None,
                 defaults: Defaults | None = None, pacing: PacingBook | None = None,
                 caps: FrequencyStore | None = None,
                 clock: Callable[[], float] = time.time, seed: int | None = None) -> None:
        from campaigns.vocab import SENSITIVE_LOCATIONS

        self._settings = settings
        self._snapshots = snapshots
        self._rankers = rankers
        self._events = events
        self._user_features = user_features
        self._item_features = item_features
        self.spend_ledger = None
        """``serving._spend.SpendLedger`` of this process's pacing (set by ``recommendation_service``)."""
        self._experiments = experiments
        self.defaults = defaults or Defaults(
            ranker=settings.models.serving_alias, reserve_ecpm=settings.serving.reserve_ecpm,
            quality_floor=settings.serving.quality_floor, exploration=settings.serving.exploration)
        self.pacing = pacing or PacingBook()
        self.caps: FrequencyStore = caps if caps is not None else FrequencyCounter()
        self._index = ContextIndex(taxonomy, SENSITIVE_LOCATIONS)
        self._signer = TokenSigner(settings.privacy.hmac_key, settings.serving.token_ttl_s)
        self._hmac_key = settings.privacy.hmac_key
        from privacy import pseudonymize as keyed_hash   # imported here: the first request must not pay ~50 ms

        self._pseudonymize = keyed_hash
        self._clock = clock
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._catalog_snap = None
        self._catalog_lock = threading.Lock()
        self._catalog_rebuild: threading.Thread | None = None
        self._catalog_failed = None     # the snapshot whose catalog failed to build, if any
        self._topic_feedback = settings.topic("feedback")
        self._topic_exposures = settings.topic("exposures")
        self._fallback_ranker = ContextRelevanceRanker()
        self.counters = Counters()

    # -- helpers ------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        """The request-path view of the current campaign snapshot.

        The first one is built before serving. When the snapshot changes (a marketer's edit,
        a product feed), the new view is built on a background thread while requests keep
        the current one: building it (~0.7 s for 53k products, plus ~0.3 s for each loaded
        model to encode the items) inside a request stalled every call of the process for
        that long. An edit therefore reaches replies within ``snapshot_refresh_s`` plus
        the build time."""
        snap = self._snapshots.get()
        current = self._catalog
        if current is not None and self._catalog_snap is snap:
            return current
        if current is None:
            with self._catalog_lock:
                if self._catalog is None:
                    self._build_catalog(snap)
            return self._catalog
        self._rebuild_in_background()
        return current

    def _build_catalog(self, snap) -> None:
        catalog = build_catalog(snap, self._index, datetime.now(timezone.utc).date(), previous=self._catalog)
        columns = getattr(self._item_features, "columns", None)
        if columns is not None and catalog.items is not None:
            catalog.stats = columns(len(catalog.items["item_id"]), {**catalog.product_rows, **catalog.ad_rows},
                                    [(catalog.ad_rows[a.creative_id], a.campaign_id) for a in catalog.ads])
        self.prepare_rankers(catalog)
        self._catalog, self._catalog_snap = catalog, snap
        self.counters.add("catalog_builds")

    def _rebuild_in_background(self) -> None:
        with self._catalog_lock:
            if self._catalog_rebuild is not None or self._catalog_failed is self._snapshots.get():
                return      # one build at a time; a snapshot that failed to build is not retried per request
            thread = self._catalog_rebuild = threading.Thread(target=self._rebuild, name="catalog-rebuild",
                                                              daemon=True)
        thread.start()

    def _rebuild(self) -> None:
        snap = self._snapshots.get()
        try:
            self._build_catalog(snap)
        except Exception:  # noqa: BLE001 - keep serving the current catalog; the next snapshot retries
            self._catalog_failed = snap
            self.counters.add("catalog_build_failures")
            log.exception("building the catalog of snapshot %s failed; serving the previous one",
                          getattr(snap, "version", "?"))
        finally:
            with self._catalog_lock:
                self._catalog_rebuild = None

    def wait_for_catalog(self, timeout: float = 10.0) -> Catalog:
        """The catalog of the current snapshot, waiting for a rebuild in progress (tests, tools)."""
        deadline = time.monotonic() + timeout
        while True:
            catalog = self.catalog()
            if self._catalog_snap is self._snapshots.get():
                return catalog
            if time.monotonic() > deadline:
                raise TimeoutError("the catalog was not rebuilt in time; see the server log")
            time.sleep(0.01)

    def prepare_rankers(self, catalog: Catalog | None = None) -> None:
        """Let every loaded model encode the catalog's items before a request needs them."""
        catalog = catalog or self.catalog()
        for ranker in getattr(self._rankers, "loaded", list)():
            prepare = getattr(ranker, "prepare", None)
            if prepare is not None:
                try:
                    prepare(catalog)
                except Exception as exc:  # noqa: BLE001 - the request path will report a broken model
                    log.warning("ranker %s could not encode the catalog (%s)", ranker.version, exc)

    def catalog_ids(self) -> tuple[list[str], list[str]]:
        cat = self.catalog()
        return cat.item_ids, cat.campaign_ids

    def _draws(self, n: int) -> list[float]:
        with self._rng_lock:
            return [self._rng.random() for _ in range(n)]

    def stats(self) -> dict:
        out = self.counters.snapshot()
        out["caps_store"] = self.caps.kind
        try:
            out["caps_users"] = self.caps.users()
        except Exception as exc:  # noqa: BLE001 - stats must not fail on a store outage
            log.debug("frequency store unavailable for stats: %s", exc)
        out["events"] = getattr(self._events, "stats", {})
        items = self._item_features
        if items is not None and hasattr(items, "refreshes"):
            out["item_stats"] = {"shared": bool(getattr(items, "shared", False)), "refreshes": items.refreshes,
                                 "failures": items.failures}
        if self.spend_ledger is not None:
            out["spend_ledger"] = {"flushes": self.spend_ledger.flushes, "failures": self.spend_ledger.failures}
        return out

    def erase_user(self, user_id: str) -> dict:
        """Forget a user's frequency counters (privacy erasure); returns what was removed."""
        return {"frequency_counters": self.caps.erase_user(pseudonymize(user_id, self._hmac_key))}

    def erase_ids(self, ids) -> int:
        """``privacy`` eraser: drop the frequency counters of these pseudonyms; returns entries removed."""
        return sum(self.caps.erase_user(i) for i in ids)

    # -- Recommend ----------------------------------------------------------------------
    def Recommend(self, request, context):  # noqa: N802 - gRPC name
        started = time.perf_counter()
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None and remaining <= 0:
            # the call waited out its deadline in the queue: its caller has given up, so doing the
            # work would only delay the calls behind it (an overload would never drain)
            self.counters.add("shed_expired")
            raise DeadlineExceeded("the caller's deadline passed before the server reached this request "
                                   "(overloaded); retry with backoff or allow more time")
        validate_recommend(request)
        deadline = None if remaining is None else time.monotonic() + remaining
        now_s = self._clock()
        now = datetime.fromtimestamp(now_s, timezone.utc)
        request_id = request.request_id or uuid.uuid4().hex
        consent = request.consent
        personal = consent.personalization
        user_key = self._pseudonymize(request.user_id, self._hmac_key) if personal else ""
        c = self.counters
        c.add("requests")

        # experiments
        assignments = []
        if self._experiments is not None:
            try:
                assignments = self._experiments.assign(user_id=request.user_id, request_id=request_id, consent=consent,
                                                       unit_user_id=user_key or None)
            except Exception as exc:  # noqa: BLE001 - experiments must never break serving
                c.add("experiments_unavailable")
                log.debug("experiment assignment failed: %s", exc)
        params = {}
        for a in sorted(assignments, key=lambda a: a.layer):
            params.update(a.params.overrides())
        arms = {a.experiment_id: a.arm for a in assignments}

        # context and user features
        x = request.context
        ctx = self._index.context(device=DEVICE_NAMES.get(x.device, ""), scene=x.scene, objects=x.objects,
                                  intent_text=x.intent_text, location_category=x.location_category, region=x.region,
                                  local_hour=x.local_hour, local_weekday=x.local_weekday)
        user: dict = {}
        if not personal:
            c.add("user_features_fallback_no_consent")
        elif self._user_features is None:
            c.add("user_features_fallback_absent")
        elif deadline is not None and deadline - time.monotonic() < 0.005:
            c.add("user_features_fallback_deadline")
        else:
            try:
                user = self._user_features.get(user_key)
                c.add("user_features_hit" if user else "user_features_fallback_absent")
            except Exception as exc:  # noqa: BLE001 - degrade to context only
                c.add("user_features_fallback_store_down")
                log.debug("user features unavailable: %s", exc)
        affinity = _affinity(user)
        personalized = bool(user)

        # candidates
        catalog = self.catalog()
        slots = request.surfaces.ad_slots
        if "num_ads" in params:
            slots = min(slots, int(params["num_ads"]))
        ads, _ = (ad_candidates(catalog, ctx, now, self._index, self.defaults.ad_candidates) if slots else ([], {}))
        day = int(now_s // DAY_S)
        if ads and personal:
            before = len(ads)
            asks = [(a.spec.campaign_id, a.spec.cap_day, a.spec.cap_week) for a in ads]
            try:
                allowed = self.caps.allowed_many(user_key, asks, day)
            except Exception as exc:  # noqa: BLE001 - a cap we cannot check is not served; uncapped ads still are
                c.add("caps_store_down")
                log.debug("frequency store unavailable: %s", exc)
                allowed = [not is_capped(per_day, per_week) for _, per_day, per_week in asks]
            ads = [a for a, ok in zip(ads, allowed) if ok]
            c.add("ads_capped", before - len(ads))
        elif ads:
            # a cap cannot count this user: the campaigns that asked for it are not served
            before = len(ads)
            ads = [a for a in ads if not a.spec.cap_skip_uncounted]
            c.add("ads_capped_uncounted", before - len(ads))
        if ads:
            draws = self._draws(len(ads))
            asks = [(a.spec.campaign_id, a.spec.daily_budget,
                     a.spec.bid * 0.02 if a.spec.strategy == "CPC" else a.spec.bid / 1000.0) for a in ads]
            kept = [a for a, ok in zip(ads, self.pacing.admit_many(asks, now_s, draws)) if ok]
            c.add("ads_paced_out", len(ads) - len(kept))
            ads = kept
        products = (product_candidates(catalog, ctx, self._index, affinity=affinity,
                                       limit=self.defaults.product_candidates) if request.surfaces.suggestions else [])
        c.add("ad_candidates", len(ads))
        c.add("product_candidates", len(products))
        _check_deadline(deadline, "candidate generation")

        # one batched model call
        base = _request_row(ctx, user_key if personal else "", personal, user)
        rows = CandidateRows(base, ads, products, self._item_features, category_clicks(user) if affinity else None,
                             catalog)
        ranker_ref = str(params.get("ranker") or self.defaults.ranker)
        ranker = self._rankers.get(ranker_ref)
        scores: list[float] = []
        if rows:
            try:
                scores = [float(s) for s in ranker.score(rows)]
            except Exception as exc:  # noqa: BLE001 - a broken model must not take serving down
                c.add("ranker_failures")
                log.warning("ranker %s failed (%s); using %s", ranker.version, exc, self._fallback_ranker.version)
                ranker = self._fallback_ranker
                scores = self._fallback_ranker.score(rows)
        _check_deadline(deadline, "ranking")
        ad_scores, product_scores = scores[:len(ads)], scores[len(ads):]

        # auction, pacing guard
        auction = AuctionParams(
            slots=slots,
            reserve_ecpm=float(params.get("reserve", self.defaults.reserve_ecpm)),
            quality_floor=float(params.get("quality_floor", self.defaults.quality_floor)),
            exploration=float(params.get("exploration_rate", self.defaults.exploration)),
        )
        by_key = {a.spec.creative_id: a for a in ads}
        with self._rng_lock:
            wins = run_auction([Bidder(a.spec.creative_id, a.spec.advertiser_id, a.spec.strategy, a.spec.bid, p)
                                for a, p in zip(ads, ad_scores)], auction, self._rng)
        reply = serving_pb2.RecommendResponse(request_id=request_id, model_version=ranker.version,
                                              personalized=personalized)
        for a in assignments:
            reply.assignments.add(experiment_id=a.experiment_id, layer=a.layer, arm=a.arm)
        cons = (1 if consent.context else 0) | (2 if personal else 0) | (4 if consent.measurement else 0)
        now_ms = int(now_s * 1000)
        events: list = []
        capped_served: list[str] = []
        for w in wins:
            a = by_key[w.bidder.key]
            spec = a.spec
            cpm = spec.strategy == "CPM"
            expected = w.price if cpm else w.price * w.bidder.pctr
            if not self.pacing.can_afford(spec.campaign_id, spec.daily_budget, now_s, expected):
                c.add("ads_budget_guard")
                continue
            position = len(reply.ads)
            imp = Impression(rid=request_id, uid=request.user_id, kind=events_pb2.AD, item=spec.creative_id,
                             pos=position, t=now_ms, cid=spec.campaign_id, adv=spec.advertiser_id,
                             sku=spec.product_sku, cat=spec.category, strat=spec.strategy, price=round(w.price, 6),
                             pctr=round(w.bidder.pctr, 6), mv=ranker.version, app=request.app_id, cons=cons, arms=arms)
            token = self._signer.sign(imp)
            reply.ads.add(ad_id=spec.creative_id, campaign_id=spec.campaign_id, creative_id=spec.creative_id,
                          advertiser_id=spec.advertiser_id, headline=spec.headline, body=spec.body,
                          image_url=spec.image_url, landing_url=spec.landing_url, call_to_action=spec.call_to_action,
                          score=w.ecpm, pctr=w.bidder.pctr, price_charged=w.price,
                          explanation=a.match.explanation or explain(spec, ctx, now, self._index),
                          impression_token=token, position=position,
                          product_sku=spec.product_sku)
            if cpm:
                self.pacing.served(spec.campaign_id, spec.daily_budget, now_s, charge=w.price)
            else:
                self.pacing.served(spec.campaign_id, spec.daily_budget, now_s, click_price=w.price, pctr=w.bidder.pctr)
            if personal and is_capped(spec.cap_day, spec.cap_week):
                # only capped campaigns are counted: nothing user-keyed is kept that no cap reads
                capped_served.append(spec.campaign_id)
            events.append((imp, token, w.price if cpm else 0.0))
        c.add("ads_served", len(reply.ads))
        if capped_served:
            try:
                self.caps.record_many(user_key, capped_served, day)
            except Exception as exc:  # noqa: BLE001 - the reply stands; the miss is counted
                c.add("caps_record_failed")
                log.warning("frequency store missed %d impressions: %s", len(capped_served), exc)

        n_sugg = request.surfaces.suggestions
        per_brand: Counter = Counter()
        at = rows.catalog_index() if products else None       # built for the ranker already
        for i in best_first(products, product_scores, n_sugg, catalog.sku_rank,
                            None if at is None else at[len(ads):]):
            cand, score = products[i], product_scores[i]
            if len(reply.suggestions) >= n_sugg:
                break
            p = cand.product
            if p.brand and per_brand[p.brand] >= 2:      # diversity: at most two per brand
                continue
            per_brand[p.brand] += 1
            position = len(reply.suggestions)
            imp = Impression(rid=request_id, uid=request.user_id, kind=events_pb2.PRODUCT, item=p.sku, pos=position,
                             t=now_ms, adv=p.advertiser_id or "", sku=p.sku, cat=p.category, pctr=round(score, 6),
                             mv=ranker.version, app=request.app_id, cons=cons, arms=arms)
            token = self._signer.sign(imp)
            reply.suggestions.add(product_sku=p.sku, title=p.title, brand=p.brand, price=p.price, currency=p.currency,
                                  landing_url=p.landing_url, score=score, explanation=cand.explanation,
                                  impression_token=token, position=position, category=p.category)
            events.append((imp, token, 0.0))
        c.add("suggestions_served", len(reply.suggestions))
        if personalized:
            c.add("personalized")

        # impression events, off the request path (queued in one go)
        if events:
            head = _event_head(events[0][0], events_pb2.IMPRESSION, now_ms, consent, context=x)
            head.serve_ms = round((time.perf_counter() - started) * 1000.0, 3)
            self._events.send_many(self._topic_feedback, [
                _item_event(head, imp, token, events_pb2.IMPRESSION, spend) for imp, token, spend in events])
        return reply

    # -- ReportFeedback -----------------------------------------------------------------
    def ReportFeedback(self, request, context):  # noqa: N802
        now_s = self._clock()
        now_ms = int(now_s * 1000)
        validate_feedback(request, now_ms)
        imp = self._signer.verify(request.impression_token, now_ms)
        consent = events_pb2.Consent(context=bool(imp.cons & 1), personalization=bool(imp.cons & 2),
                                     measurement=bool(imp.cons & 4))
        event_id = event_id_of(request.impression_token, request.type)
        self.counters.add(f"feedback_{events_pb2.FeedbackType.Name(request.type).lower()}")
        if request.type == events_pb2.IMPRESSION:
            # Recommend already logged the impression under this event id; a report is idempotent.
            return serving_pb2.FeedbackResponse(event_id=event_id)
        spend = imp.price if (request.type == events_pb2.CLICK and imp.strat == "CPC") else 0.0
        if spend:
            budget = self.catalog().budgets.get(imp.cid)
            self.pacing.clicked(imp.cid, budget, now_s, spend)
        head = _event_head(imp, request.type, request.event_time_ms or now_ms, consent)
        event = _item_event(head, imp, request.impression_token, request.type, spend,
                            conversion_value=request.conversion_value)
        self._events.send(self._topic_feedback, event)
        return serving_pb2.FeedbackResponse(event_id=event_id)


_EVENT_NS_BYTES = _EVENT_NS.bytes


def event_id_of(token: str, kind: int) -> str:
    """``str(uuid.uuid5(_EVENT_NS, f"{token}:{kind}"))`` without the UUID object (a request
    makes ~13; the uuid module took half of building an event). Deterministic, so a
    replayed or re-reported event keeps its id and ingestion drops the duplicate."""
    digest = bytearray(hashlib.sha1(_EVENT_NS_BYTES + f"{token}:{kind}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50          # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80          # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _event_head(imp: Impression, kind: int, time_ms: int, consent, *, context=None):
    """The fields every event of one reply shares (who, when, consent, context, arms),
    built once per reply and copied per item: copying the context once per item was
    most of an event's cost. Without measurement consent the user, request, context and
    arms stay out."""
    measured = consent.measurement
    head = events_pb2.FeedbackEvent(
        event_time_ms=time_ms, user_id=imp.uid if measured else "", consent=consent, type=kind,
        request_id=imp.rid if measured else "", model_version=imp.mv, app_id=imp.app)
    if measured:
        if context is not None:
            head.context.CopyFrom(context)
        for k, v in imp.arms.items():
            head.experiment_arms[k] = v
    return head


def _item_event(head, imp: Impression, token: str, kind: int, spend: float, *, conversion_value: float = 0.0):
    """One item's ``FeedbackEvent``: the reply's ``head`` plus this item's fields."""
    event = events_pb2.FeedbackEvent()
    event.CopyFrom(head)
    event.event_id = event_id_of(token, kind)
    event.impression_token = token
    event.item_kind = imp.kind
    event.item_id = imp.item
    event.campaign_id = imp.cid
    event.advertiser_id = imp.adv
    event.product_sku = imp.sku
    event.category = imp.cat
    event.position = imp.pos
    event.spend = spend
    event.conversion_value = conversion_value
    event.pctr = imp.pctr
    return event


def _check_deadline(deadline: float | None, stage: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineExceeded(f"the caller's deadline passed during {stage}; allow at least 50 ms for Recommend")


def best_first(products: Sequence, scores: Sequence[float], want: int,
               sku_rank: np.ndarray | None = None, rows: np.ndarray | None = None) -> Iterator[int]:
    """Positions of ``products`` (``ProductCandidate``s) by descending score, ties by sku.

    With ``sku_rank`` (``Catalog.sku_rank``) and every candidate's catalog row (``rows``, else
    read from the candidates), one ``np.lexsort`` orders them all. Otherwise (a catalog built
    by hand, a NaN score) the reply reads the first ``want`` or a few more (at most two per
    brand), so only the ~4 × ``want`` best are sorted as (score, sku) tuples (every tie at the
    cut included), the rest only if the reader gets that far: model scores tie often
    (products alike in every feature), and the tuples of ~150 candidates were ~2 % of a request."""
    n = len(scores)
    k = max(4 * want, 20)
    values = np.asarray(scores, dtype=np.float64)
    nan = bool(np.isnan(values).any())
    if sku_rank is not None and n and not nan:
        if rows is None:
            rows = np.fromiter((c.row for c in products), dtype=np.int64, count=n)
        if rows.min() >= 0:
            yield from np.lexsort((sku_rank[rows], -values)).tolist()
            return
    if n <= k or nan:
        head, rest = range(n), ()
    else:
        cut = np.partition(values, n - k)[n - k]                    # the k-th largest score
        above = values >= cut
        head, rest = np.flatnonzero(above).tolist(), np.flatnonzero(~above).tolist()
    for part in (head, rest):
        yield from (i for _, _, i in sorted((-scores[i], products[i].product.sku, i) for i in part))


def _affinity(user: dict) -> dict[str, float]:
    """Categories the user engaged with (7 d clicks) or asked about recently → weight in (0, 1]."""
    out: dict[str, float] = {}
    cats = user.get("user_engaged_categories_7d") or []
    clicks = user.get("user_engaged_category_clicks_7d") or []
    for cat, n in zip(cats, clicks):
        if n:
            out[cat] = min(1.0, 0.3 + 0.1 * float(n))
    for cat in (user.get("user_recent_intent_categories") or [])[:5]:
        out[cat] = max(out.get(cat, 0.0), 0.5)
    return out


def _request_row(ctx, user_key: str, personal: bool, user: dict) -> dict:
    row = {
        "scene": ctx.scene, "objects": list(ctx.objects), "intent_text": ctx.intent_text,
        "intent_category": ctx.top_category, "location_category": ctx.location_category, "region": ctx.region,
        "local_hour": ctx.local_hour, "local_weekday": ctx.local_weekday, "device": ctx.device,
        "user_id": user_key, "consent_personalization": 1 if personal else 0,
    }
    if user:
        row.update(user)
    return row


