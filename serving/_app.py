"""Assembling the services ``sightline serve`` runs.

``recommendation_service(settings, ...)`` wires the RecommendationServicer to its real
backends (campaign snapshot cache, Feast, the model registry, experiments, the Kafka
event log); every backend can be injected instead (tests, benchmarks). Admin services
come from other packages through a ``grpc_services(settings) -> list[Service]`` function
in their ``__init__`` (campaigns, experiments, privacy).
"""

from __future__ import annotations

import importlib
import logging

from serving._server import Service

log = logging.getLogger(__name__)

RECOMMENDATION_SERVICE = "sightline.v1.RecommendationService"
RECOMMENDATION_SCOPES = {"Recommend": "recommend", "ReportFeedback": "feedback"}
RECOMMENDATION_INLINE = frozenset(RECOMMENDATION_SCOPES)
"""Both run on the event loop under ``serving.runtime = "asyncio"``: milliseconds of CPU, no waits."""

ADMIN_PACKAGES: tuple[str, ...] = ("campaigns", "experiments", "privacy")
"""Packages asked for ``grpc_services(settings)``; a package without one is skipped."""


def admin_services(settings, *, erasers=None) -> list[Service]:
    """Admin services of the packages in ``ADMIN_PACKAGES``; ``erasers`` (name → callable on
    pseudonyms) go to ``privacy`` so an erasure also clears this server's in-process state."""
    out: list[Service] = []
    for name in ADMIN_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        factory = getattr(module, "grpc_services", None)
        if factory is None:
            continue
        out.extend(factory(settings, erasers=erasers) if name == "privacy" and erasers else factory(settings))
    return out


def recommendation_service(settings, *, snapshots=None, rankers=None, events=None, user_features=None,
                           item_features=None, experiments=None, feature_store: bool = True,
                           use_experiments: bool = True, defaults=None, pacing=None, caps=None,
                           seed: int | None = None, clock=None) -> Service:
    """The Recommend/ReportFeedback ``Service`` with real backends unless given.

    ``feature_store=False`` runs without Feast (context-only ranking; counted as absent).
    ``caps`` defaults to the ``FrequencyStore`` of ``serving.frequency_store``; ``pacing`` to a
    ``PacingBook`` pacing 1/``serving.processes`` of every budget.
    The returned Service starts the background threads in ``on_start`` and drains the
    event log in ``on_stop``; ``service.servicer`` is the ``RecommendationServicer``.
    """
    import time

    from campaigns import Taxonomy
    from proto import serving_pb2_grpc
    from serving._events import KafkaEventLog
    from serving._features import UserFeatures
    from serving._item_stats import ItemFeatures
    from serving._ranker import RegistryRankers, registry_loader
    from serving._recommend import Experiments, RecommendationServicer

    owned: list = []
    if caps is None:
        from serving._caps import frequency_store

        caps = frequency_store(settings)
    ledger = store = None
    if snapshots is None:
        from campaigns import CampaignStore, SnapshotCache

        store = CampaignStore.from_settings(settings)
        snapshots = SnapshotCache(store, refresh_s=settings.serving.snapshot_refresh_s)
        owned.append(snapshots)
    if pacing is None:
        from serving._delivery import PacingBook

        if store is not None:
            # every process paces the whole budget against the totals in the campaign store
            from serving._spend import SpendLedger

            pacing = PacingBook()
            ledger = SpendLedger(pacing, store, flush_s=settings.serving.pacing_flush_s, clock=clock or time.time)
        else:   # no shared store to meet in: 1/N of every budget each
            pacing = PacingBook(share=1.0 / settings.serving.processes)
    if rankers is None:
        rankers = RegistryRankers(registry_loader(settings))
    if events is None:
        from sightline.stack import kafka_bootstrap

        events = KafkaEventLog.from_settings(settings, kafka_bootstrap(settings))
    if feature_store and user_features is None:
        from features import open_store

        user_features = UserFeatures(lambda: open_store(settings))
    if experiments is None and use_experiments:
        try:
            from experiments import ExperimentCache, ExperimentStore

            topic = settings.topic("exposures")
            experiments = Experiments(ExperimentCache(ExperimentStore.from_settings(settings)),
                                      lambda event: events.send(topic, event))
        except ModuleNotFoundError:  # pragma: no cover
            experiments = None
    servicer = RecommendationServicer(
        settings=settings, snapshots=snapshots, rankers=rankers, events=events, taxonomy=Taxonomy(),
        user_features=user_features, experiments=experiments, defaults=defaults, pacing=pacing, caps=caps, seed=seed,
        clock=clock or time.time)
    if feature_store and item_features is None:
        # the reads run in another process (this one's GIL belongs to the request threads),
        # shared by the processes of a ServerGroup (serving.item_stats_socket)
        hub = settings.serving.item_stats_socket
        item_features = ItemFeatures(settings, servicer.catalog_ids, version_fn=servicer.catalog,
                                     hub_address=str(hub) if hub else None)
    servicer._item_features = item_features
    servicer.spend_ledger = ledger

    def on_start() -> None:
        # Loading imports torch, torchrec and feast and builds the catalog and the model: ~800k
        # long-lived objects, over which the cyclic GC ran ~20 full collections (up to 0.3 s each,
        # ~2.4 s per process). None of it is garbage, so the GC waits until it is all in place.
        import gc

        enabled = gc.isenabled()
        gc.disable()
        try:
            _start()
        finally:
            if enabled:
                gc.enable()
        # the catalog and the model are long-lived: keep the cyclic GC from rescanning them (p99)
        gc.collect()
        gc.freeze()

    def _start() -> None:
        try:
            events.start()
        except Exception as exc:  # noqa: BLE001 - kafka-python raises several types
            from serving.errors import Unavailable

            raise Unavailable(f"the event log cannot reach Kafka ({exc}); start it with 'sightline stack up' "
                              "or set SIGHTLINE_KAFKA_BOOTSTRAP") from exc
        for cache in owned:
            cache.start()
        if ledger is not None:
            ledger.restore()     # before the first request: today's spend so far, every server's
            ledger.start()
        servicer.catalog()
        if user_features is not None:
            try:
                user_features.warm()
            except Exception as exc:  # noqa: BLE001 - serve context-only until it comes back
                log.warning("feature store unavailable at start-up (%s); serving context-only", exc)
        if item_features is not None:
            item_features.start()
        _warm_rankers(rankers, settings.models.serving_alias, experiments)
        servicer.prepare_rankers()

    def on_stop() -> None:
        if ledger is not None:
            ledger.stop()
        if item_features is not None:
            item_features.stop()
        for cache in owned:
            cache.stop()
        events.close()
        caps.close()

    return Service(RECOMMENDATION_SERVICE, serving_pb2_grpc.add_RecommendationServiceServicer_to_server,
                   servicer, RECOMMENDATION_SCOPES, on_stop=on_stop, on_start=on_start,
                   inline=RECOMMENDATION_INLINE)


def _warm_rankers(rankers, default_ref: str, experiments) -> None:
    """Load every model a request may ask for before the server reports SERVING: loading
    a TorchRec model takes about a second, which no request should pay."""
    refs = {default_ref}
    if experiments is not None and hasattr(experiments, "ranker_refs"):
        try:
            refs |= experiments.ranker_refs()
        except Exception as exc:  # noqa: BLE001 - the experiment store may be down; serve anyway
            log.warning("could not list experiment rankers to preload (%s)", exc)
    for ref in sorted(refs):
        rankers.get(ref)  # falls back (and logs) when the registry lacks it


def app_services(settings) -> list[Service]:
    """Every service of a full Sightline server built from settings."""
    recommend = recommendation_service(settings)
    # a shared frequency store (sqlite, redis) is erased by privacy itself; only counts kept in
    # this process need the running server's hand
    memory = settings.frequency_store_kind == "memory"
    erasers = {"serving_frequency_counters": recommend.servicer.erase_ids} if memory else None
    return [recommend] + admin_services(settings, erasers=erasers)
