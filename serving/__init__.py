"""The gRPC serving stage: one server setup (health, reflection, auth, error mapping)
for the Recommend/ReportFeedback service and the admin services of other packages.

Server::

    from serving import ApiKeyStore, Service, build_server, recommendation_service
    server = build_server(settings, [recommendation_service(settings), *admin_services],
                          api_keys=ApiKeyStore.from_settings(settings))
    server.start(); ...; server.stop()       # server.port is the bound port (port 0 = any)

``Service(name, add_to_server, servicer, scopes={"Method": "scope"})`` registers any
generated gRPC servicer; every method declares one of ``SCOPES``. Errors carry the gRPC
status name in ``code`` (``serving.errors``); the one error interceptor maps them.

Pure decision cores (tested without services): ``run_auction``, the pacing controller
(``PlanCurve``, ``PacerState``, ``pacing_update``, ``pacing_admit``), ``cap_allows``,
``ContextIndex`` + ``match`` (targeting).
"""

from serving._app import RECOMMENDATION_SCOPES, RECOMMENDATION_SERVICE, admin_services, app_services, recommendation_service
from serving._auction import AuctionParams, Bidder, Win, run_auction
from serving._caps import FrequencyCounter, cap_allows, frequency_store
from serving._caps_redis import RedisFrequencyStore
from serving._caps_sqlite import SqliteFrequencyStore
from serving._context import ContextIndex, RequestContext
from serving._delivery import PacingBook
from serving._echo import EchoServicer, echo_service
from serving._events import KafkaEventLog, MemoryEventLog
from serving._interceptors import ERROR_FIELD_METADATA, current_caller
from serving._keys import SCOPES, ApiKey, ApiKeyStore, key_id_of
from serving._processes import ServerGroup, sum_stats
from serving._pacing import PacerState, PacingConfig, PlanCurve, plan_rmse
from serving._pacing import admit as pacing_admit
from serving._pacing import update as pacing_update
from serving._ranker import FALLBACK_VERSION, ContextRelevanceRanker, RegistryRankers
from serving._ratelimit import RateLimiter, RedisRateLimiter, SharedRateLimiter, TokenBucket, create_bucket_file
from serving._recommend import Defaults, Experiments, RecommendationServicer, pseudonymize
from serving._server import Service, ServingServer, build_server
from serving._targeting import AdSpec, Match, match
from serving.types import EventSink, FrequencyStore, Ranker, RankerSource, SnapshotSource

__all__ = [
    "build_server", "Service", "ServingServer", "ServerGroup", "sum_stats", "SCOPES", "ApiKey", "ApiKeyStore", "key_id_of", "current_caller",
    "ERROR_FIELD_METADATA", "RateLimiter", "RedisRateLimiter", "SharedRateLimiter", "TokenBucket", "create_bucket_file",
    "recommendation_service", "admin_services", "app_services", "RECOMMENDATION_SERVICE", "RECOMMENDATION_SCOPES",
    "RecommendationServicer", "Defaults", "Experiments", "pseudonymize", "EchoServicer", "echo_service",
    "KafkaEventLog", "MemoryEventLog", "RegistryRankers", "ContextRelevanceRanker", "FALLBACK_VERSION",
    "Ranker", "RankerSource", "EventSink", "SnapshotSource",
    "AuctionParams", "Bidder", "Win", "run_auction", "PlanCurve", "PacerState", "PacingConfig", "pacing_update",
    "pacing_admit", "plan_rmse", "PacingBook", "FrequencyCounter",
    "FrequencyStore", "SqliteFrequencyStore", "RedisFrequencyStore", "frequency_store", "cap_allows", "ContextIndex", "RequestContext", "AdSpec",
    "Match", "match",
]
