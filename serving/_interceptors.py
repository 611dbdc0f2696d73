"""The server interceptors: error mapping (outermost), API-key auth + rate limits, and
request decoding (innermost).

Both wrap the method's behaviour rather than replacing the handler, so an auth failure
is just an exception (``Unauthenticated``, ``PermissionDenied``, ``RateLimited``) that
the error interceptor maps like any other: one path from exception to status.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Callable, Mapping

import grpc

from serving._keys import ApiKey, ApiKeyStore
from serving._ratelimit import RateLimiter
from serving.errors import InvalidRequest, PermissionDenied, RateLimited

log = logging.getLogger(__name__)

PUBLIC_PREFIXES: tuple[str, ...] = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
"""Methods any caller may use without a key (standard tools probe them)."""

ERROR_FIELD_METADATA = "x-error-field"
"""Trailing metadata key naming the bad request field of an INVALID_ARGUMENT answer."""

_CALLER: contextvars.ContextVar[ApiKey | None] = contextvars.ContextVar("sightline_caller", default=None)


def current_caller() -> ApiKey | None:
    """The API key of the request being handled on this thread (None when auth is off)."""
    return _CALLER.get()


def _status_of(exc: BaseException) -> grpc.StatusCode | None:
    name = getattr(exc, "code", None)
    if isinstance(name, str) and name in grpc.StatusCode.__members__ and name != "OK":
        return grpc.StatusCode[name]
    return None


def _map(exc: Exception, context: grpc.ServicerContext, method: str) -> None:
    status = _status_of(exc)
    if status is not None:
        field = getattr(exc, "field", None)
        if field:
            context.set_trailing_metadata(((ERROR_FIELD_METADATA, str(field)),))
        context.abort(status, str(exc))
    if context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # the servicer aborted itself (context.abort); keep its status
    log.exception("unhandled error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}; see the server log")


def _wrap(handler: grpc.RpcMethodHandler, around: Callable[[Callable, object, grpc.ServicerContext], object],
          request_deserializer: Callable[[bytes], object] | None = None):
    """A handler of the same kind whose behaviour runs through ``around(behaviour, request, context)``
    (and whose requests ``request_deserializer`` decodes, when given)."""
    if handler.unary_unary:
        inner, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.unary_stream:
        inner, make = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    elif handler.stream_unary:
        inner, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    else:
        inner, make = handler.stream_stream, grpc.stream_stream_rpc_method_handler

    def behaviour(request, context):
        return around(inner, request, context)

    return make(behaviour, request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer)


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps an exception's ``code`` attribute (a gRPC status name) to that status, its
    message to the details and its ``field`` to trailing metadata; anything else is
    logged and answered INTERNAL."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        streaming = handler.response_streaming

        def around(inner, request, context):
            if not streaming:
                try:
                    return inner(request, context)
                except Exception as exc:  # noqa: BLE001 - this is the one place that maps errors
                    _map(exc, context, method)
            return _guard_stream(lambda: inner(request, context), context, method)

        return _wrap(handler, around)


def _guard_stream(start, context, method):
    try:
        yield from start()
    except Exception as exc:  # noqa: BLE001
        _map(exc, context, method)


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks the ``x-api-key`` metadata, the method's scope and the key's rate limit.

    ``scopes`` maps full method names (``/pkg.Service/Method``) to the required scope.
    Health and reflection are public. A method without a declared scope is refused
    (build_server refuses to start with one, so this is a second line of defence).
    """

    def __init__(self, scopes: Mapping[str, str], keys: ApiKeyStore, limiter: RateLimiter,
                 clock: Callable[[], float]) -> None:
        self._scopes = dict(scopes)
        self._keys = keys
        self._limiter = limiter
        self._clock = clock

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(PUBLIC_PREFIXES):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        scope = self._scopes.get(method)
        api_key = next((v for k, v in handler_call_details.invocation_metadata or () if k == "x-api-key"), None)

        def around(inner, request, context):
            key = self._keys.verify(api_key if isinstance(api_key, str) else None)
            if scope is None or scope not in key.scopes:
                raise PermissionDenied(
                    f"API key {key.key_id} ({key.owner}) lacks scope {scope!r} required by {method}; "
                    f"it has {', '.join(sorted(key.scopes))}. Create a key with that scope.")
            ok, retry = self._limiter.allow(key.key_id, self._clock(), key.rate_per_s, key.burst)
            if not ok:
                raise RateLimited(f"API key {key.key_id} is over its rate limit; retry in {retry:.2f} s "
                                  "or ask for a higher limit")
            token = _CALLER.set(key)
            try:
                return inner(request, context)
            finally:
                _CALLER.reset(token)

        return _wrap(handler, around)


class _Undecodable:
    """A request body that did not parse, carried to ``DecodeInterceptor``'s check."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class DecodeInterceptor(grpc.ServerInterceptor):
    """Turns a request body that does not parse into INVALID_ARGUMENT naming the message
    type, after the auth check (innermost), instead of grpc's own answer: INTERNAL
    "Exception deserializing request!" on the thread-pool server, UNKNOWN with the protobuf
    exception on the asyncio one.

    The deserializer never fails; it hands a ``_Undecodable`` to the wrapped behaviour,
    which raises ``InvalidRequest`` for the error interceptor to map. Being innermost, it
    sees the registered handler itself, so the wrapped one is built once per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not handler.unary_unary or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        hit = self._wrapped.get(method)
        if hit is None or hit[0] is not handler:
            hit = self._wrapped[method] = (handler, self._lenient(handler))
        return hit[1]

    @staticmethod
    def _lenient(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        deserialize = handler.request_deserializer
        message = getattr(getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None), "full_name",
                          "request message")

        def lenient(data: bytes):
            try:
                return deserialize(data)
            except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
                return _Undecodable(str(exc))

        def around(inner, request, context):
            if isinstance(request, _Undecodable):
                raise InvalidRequest(f"the request body is not a valid {message} ({request.error}); "
                                     f"send a serialized {message}")
            return inner(request, context)

        return _wrap(handler, around, lenient)
