"""Privacy: consent rules, pseudonymization, erasure, retention and tombstones.

Public API::

    from privacy import pseudonymize, Tombstones, erase_user, purge_expired, allowed, ConsentFlags
    uid = pseudonymize(app_user_id, settings.privacy.hmac_key)     # before anything is stored
    Tombstones(settings).drops(uid, event_time_ms)                  # ingestion: drop late events
    receipt = erase_user(settings, app_user_id)                     # every store; Receipt with counts
    report = purge_expired(settings)                                # rows older than retention_days
    allowed(ConsentFlags.of(event.consent), "feature_store", "write_user_features")

``grpc_services(settings)`` gives ``PrivacyAdminService`` (scope ``admin:privacy``) for
``serving.build_server``. The consent table (``ACTIONS``) renders into docs/privacy.md
with ``sightline privacy consent-table --write``. Nothing here imports Feast at import time.
"""

from privacy._consent import (
    ACTIONS, PURPOSES, STAGES, Action, ConsentFlags, action, actions_of, allowed, cell, render_markdown, splice_into,
)
from privacy._erase import Eraser, Receipt, StoreDeletion, erase_user, erasure_ids, receipts_path
from privacy._grpc import SERVICE_NAME, grpc_services, privacy_servicer
from privacy._online import entity_key_bytes
from privacy._pseudonym import PSEUDONYM_HEX_CHARS, pseudonym_candidates, pseudonymize
from privacy._retention import PurgeReport, purge_expired
from privacy._tombstones import Tombstones, tombstone_path
from privacy.errors import InvalidUserId, PrivacyError, StoreUnavailable, UnknownStage

__all__ = [
    "ACTIONS", "PURPOSES", "STAGES", "Action", "ConsentFlags", "action", "actions_of", "allowed", "cell",
    "render_markdown", "splice_into",
    "Eraser", "Receipt", "StoreDeletion", "erase_user", "erasure_ids", "receipts_path",
    "SERVICE_NAME", "grpc_services", "privacy_servicer",
    "entity_key_bytes",
    "PSEUDONYM_HEX_CHARS", "pseudonym_candidates", "pseudonymize",
    "PurgeReport", "purge_expired",
    "Tombstones", "tombstone_path",
    "InvalidUserId", "PrivacyError", "StoreUnavailable", "UnknownStage",
]
