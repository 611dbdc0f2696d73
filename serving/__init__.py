"""The gRPC serving stage: one server setup (health, reflection, auth, error mapping)
for the Recommend/ReportFeedback service and the admin services of other packages.

Public API:
- ``build_server(settings, servicers=[Service(...)], api_keys=ApiKeyStore(...))`` → ``ServingServer``
- ``Service``: a servicer plus the scope each of its methods requires (``SCOPES``)
- ``ApiKeyStore``: hashed API keys in the campaign database (create, list, revoke, verify)
- ``current_caller()``: the ``ApiKey`` of the request being handled
- errors in ``serving.errors`` (each carries the gRPC status name in ``code``)
"""

from serving._interceptors import ERROR_FIELD_METADATA, current_caller
from serving._keys import SCOPES, ApiKey, ApiKeyStore, key_id_of
from serving._ratelimit import RateLimiter, TokenBucket
from serving._server import Service, ServingServer, build_server

__all__ = [
    "ERROR_FIELD_METADATA", "SCOPES", "ApiKey", "ApiKeyStore", "RateLimiter", "Service", "ServingServer",
    "TokenBucket", "build_server", "current_caller", "key_id_of",
]
