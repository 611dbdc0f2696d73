"""``build_server``: one gRPC server setup for every Sightline service.

Health checking, reflection, message-size limits, optional TLS, the error interceptor
and (unless ``serving.require_api_key`` is off) API-key auth with per-key rate limits.
Services are registered as ``Service`` values that declare the scope of every method.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import grpc

from serving._interceptors import AuthInterceptor, DecodeInterceptor, ErrorInterceptor
from serving._keys import SCOPES, ApiKeyStore
from serving._ratelimit import rate_limiter
from serving.errors import ServerConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """One gRPC service to serve, with the scope each of its methods requires.

    Example::

        Service(
            name="sightline.v1.CampaignAdmin",                       # full proto name
            add_to_server=admin_pb2_grpc.add_CampaignAdminServicer_to_server,
            servicer=CampaignAdminServicer(store),
            scopes={"CreateCampaign": "admin:campaigns", "ListCampaigns": "admin:campaigns"},
        )
    """

    name: str
    """Full proto service name, e.g. ``sightline.v1.RecommendationService``."""
    add_to_server: Callable[[object, grpc.Server], None]
    """The generated ``add_<Service>Servicer_to_server`` function."""
    servicer: object
    scopes: Mapping[str, str]
    """Method name (``Recommend``) or full method name (``/pkg.Svc/Recommend``) → scope in ``SCOPES``.
    Every method of the service must be listed; the server refuses to start otherwise."""
    on_stop: Callable[[], None] | None = None
    """Called once after the server stopped (e.g. flush a background event logger)."""
    on_start: Callable[[], None] | None = None
    """Called once before the server starts accepting requests (e.g. start refresh threads)."""
    inline: frozenset[str] = frozenset()
    """Methods that, under ``serving.runtime = "asyncio"``, run on the event-loop thread itself:
    short, CPU-bound ones (Recommend). The others run on the ``serving.workers`` threads."""

    def full_scopes(self) -> dict[str, str]:
        """Full method name → scope, checked against the service's proto descriptor."""
        descriptor = _descriptor(self.name)
        out: dict[str, str] = {}
        for method, scope in self.scopes.items():
            short = method.rsplit("/", 1)[-1]
            if short not in descriptor.methods_by_name:
                raise ServerConfigError(f"{self.name} has no method {short!r}; its methods are "
                                        f"{', '.join(descriptor.methods_by_name)}")
            if scope not in SCOPES:
                raise ServerConfigError(f"{self.name}/{short} declares unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
            out[f"/{self.name}/{short}"] = scope
        missing = [m for m in descriptor.methods_by_name if f"/{self.name}/{m}" not in out]
        if missing:
            raise ServerConfigError(f"{self.name} declares no scope for {', '.join(missing)}; add them to Service.scopes")
        return out


def _descriptor(service_name: str):
    from google.protobuf import descriptor_pool

    try:
        return descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        raise ServerConfigError(f"service {service_name!r} is not in the protobuf descriptor pool; "
                                "import its *_pb2 module and use the full name (package.Service)") from None


@dataclass
class ServingServer:
    """A built (not yet started) server. ``port`` is the bound port (useful with port 0)."""

    grpc_server: grpc.Server
    """A ``grpc.Server``, or the ``LoopServer`` that drives a ``grpc.aio`` one the same way."""
    host: str
    port: int
    services: tuple[Service, ...]
    health: object
    api_keys: ApiKeyStore | None
    tls: bool
    _owns_keys: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "ServingServer":
        from grpc_health.v1 import health_pb2

        for service in self.services:
            if service.on_start:
                service.on_start()
        self.grpc_server.start()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for service in self.services:
            self.health.set(service.name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s (%s, auth %s)", ", ".join(s.name for s in self.services), self.address,
                 "TLS" if self.tls else "plaintext", "on" if self.api_keys else "off")
        return self

    def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, finish in-flight calls within ``grace``, then run the on_stop hooks."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        for service in reversed(self.services):
            if service.on_stop:
                try:
                    service.on_stop()
                except Exception:  # noqa: BLE001 - keep stopping the others
                    log.exception("on_stop of %s failed", service.name)
        if self._owns_keys and self.api_keys is not None:
            self.api_keys.close()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self.grpc_server.wait_for_termination(timeout)

    def __enter__(self) -> "ServingServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def build_server(
    settings,
    servicers: Sequence[Service] = (),
    api_keys: ApiKeyStore | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    reuse_port: bool = False,
) -> ServingServer:
    """Build the gRPC server on ``settings.serving.host:port`` (``port`` 0 picks a free one).

    ``api_keys`` defaults to an ``ApiKeyStore`` on ``settings.campaign_db_url`` when
    ``settings.serving.require_api_key`` is on. Call ``.start()`` (or use ``with``).
    ``reuse_port`` binds with SO_REUSEPORT, so the other processes of a ``ServerGroup`` can
    bind the same port; the kernel then spreads connections over them.
    """
    from grpc_health.v1 import health, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    cfg = settings.serving
    scopes: dict[str, str] = {}
    names = [s.name for s in servicers]
    if len(set(names)) != len(names):
        raise ServerConfigError(f"a service is registered twice: {names}")
    for service in servicers:
        scopes.update(service.full_scopes())

    interceptors: list[grpc.ServerInterceptor] = [ErrorInterceptor()]
    owns_keys = False
    if cfg.require_api_key:
        if api_keys is None:
            api_keys, owns_keys = ApiKeyStore.from_settings(settings), True
        interceptors.append(AuthInterceptor(scopes, api_keys, rate_limiter(settings), clock))
    else:
        api_keys = None
        log.warning("serving.require_api_key is off: every caller may call every method")

    interceptors.append(DecodeInterceptor())
    options = [
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]
    if cfg.runtime == "asyncio":
        from serving._aio import LoopServer

        inline = {f"/{s.name}/{m}" for s in servicers for m in s.inline}
        streaming = [f"/{s.name}/{m.name}" for s in servicers for m in _descriptor(s.name).methods
                     if m.client_streaming or m.server_streaming]
        if streaming:
            raise ServerConfigError(f"serving.runtime = asyncio serves unary methods only, and {', '.join(streaming)} "
                                    "streams; set SIGHTLINE_SERVING_RUNTIME=threads")
        server = LoopServer(interceptors=interceptors, inline=inline, workers=cfg.workers, options=options)
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="serving"),
                             interceptors=interceptors, options=options)
    for service in servicers:
        service.add_to_server(service.servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], getattr(server, "aio_server", server))

    host = host or cfg.host
    address = f"{host}:{cfg.port if port is None else port}"
    tls = bool(cfg.tls_cert or cfg.tls_key)
    try:
        bound = _bind(server, address, cfg, tls)
    except ServerConfigError:
        server.stop(None)          # the asyncio runtime's server owns a loop thread and a pool
        raise
    return ServingServer(server, host, bound, tuple(servicers), health_servicer, api_keys, tls, _owns_keys=owns_keys)


def _bind(server, address: str, cfg, tls: bool) -> int:
    try:
        if tls:
            if not (cfg.tls_cert and cfg.tls_key):
                raise ServerConfigError("TLS needs both serving.tls_cert and serving.tls_key "
                                        "(SIGHTLINE_SERVING_TLS_CERT / SIGHTLINE_SERVING_TLS_KEY)")
            try:
                creds = grpc.ssl_server_credentials([(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())])
            except OSError as exc:
                raise ServerConfigError(f"cannot read the TLS key/certificate: {exc}") from exc
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ServerConfigError(f"cannot bind {address}: {exc}; choose another serving.port") from exc
    if not bound:
        raise ServerConfigError(f"cannot bind {address}; is the port taken? choose another serving.port (0 = any free)")
    return bound
