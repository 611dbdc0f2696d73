"""``PrivacyAdminService``: the admin gRPC face of erasure (scope ``admin:privacy``).

Registered by ``serving`` through ``privacy.grpc_services(settings)`` like every admin
package. A running server's in-process user-keyed state (frequency-cap counters) can
only be cleared inside that process: pass it as ``erasers`` when building the service.
"""

from __future__ import annotations

import logging
from typing import Mapping

log = logging.getLogger(__name__)

SERVICE_NAME = "sightline.v1.PrivacyAdminService"
SCOPES = {"EraseUser": "admin:privacy"}


def _servicer_class():
    from proto import privacy_pb2, privacy_pb2_grpc

    class PrivacyAdminServicer(privacy_pb2_grpc.PrivacyAdminServiceServicer):
        def __init__(self, settings, erasers: Mapping | None = None) -> None:
            self._settings = settings
            self._erasers = dict(erasers or {})

        def EraseUser(self, request, context):  # noqa: N802 - gRPC method name
            from privacy._erase import erase_user

            owner = ""
            try:
                from serving import current_caller

                caller = current_caller()
                owner = caller.owner if caller else ""
            except ImportError:  # pragma: no cover - serving always present in the server
                pass
            receipt = erase_user(self._settings, request.user_id, pseudonymous=request.pseudonymous,
                                 requested_by=owner, erasers=self._erasers)
            if request.reason:
                log.info("erasure %s reason: %s", receipt.receipt_id, request.reason[:200])
            return privacy_pb2.ErasureReceipt(
                receipt_id=receipt.receipt_id, user_pseudonym=receipt.user_pseudonym,
                erased_at_ms=receipt.erased_at_ms, duration_s=receipt.duration_s, tombstoned=receipt.tombstoned,
                requested_by=receipt.requested_by, notes=list(receipt.notes), total_deleted=receipt.total_deleted,
                stores=[privacy_pb2.StoreDeletion(store=s.store, location=s.location, deleted=s.deleted, detail=s.detail)
                        for s in receipt.stores],
            )

    return PrivacyAdminServicer


def privacy_servicer(settings, erasers: Mapping | None = None):
    """A ``PrivacyAdminServicer`` (the generated base class is imported lazily)."""
    return _servicer_class()(settings, erasers)


def grpc_services(settings, erasers: Mapping | None = None) -> list:
    """The privacy admin service as ``serving.Service`` values for ``serving.build_server``."""
    from proto import privacy_pb2_grpc
    from serving import Service

    return [Service(SERVICE_NAME, privacy_pb2_grpc.add_PrivacyAdminServiceServicer_to_server,
                    privacy_servicer(settings, erasers), dict(SCOPES))]
