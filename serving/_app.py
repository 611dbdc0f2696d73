"""The services ``sightline serve`` runs: Recommend/ReportFeedback plus the admin
services other packages offer through a ``grpc_services(settings) -> list[Service]``
function in their ``__init__`` (campaigns, experiments, privacy)."""

from __future__ import annotations

import importlib
import logging

from serving._server import Service

log = logging.getLogger(__name__)

ADMIN_PACKAGES: tuple[str, ...] = ("campaigns", "experiments", "privacy")
"""Packages asked for ``grpc_services(settings)``; a package without one is skipped."""


def admin_services(settings) -> list[Service]:
    out: list[Service] = []
    for name in ADMIN_PACKAGES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        factory = getattr(module, "grpc_services", None)
        if factory is not None:
            out.extend(factory(settings))
    return out


def app_services(settings) -> list[Service]:
    """Every service of a full Sightline server built from settings."""
    services: list[Service] = []
    try:
        from serving._recommend import recommendation_service
    except ModuleNotFoundError:  # pragma: no cover - until the servicer lands
        from serving._echo import echo_service as _fallback

        services.append(_fallback())
    else:
        services.append(recommendation_service(settings))
    return services + admin_services(settings)
