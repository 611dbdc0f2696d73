"""The asyncio runtime of ``build_server`` (``serving.runtime = "asyncio"``).

Why: with grpc's thread-pool server every request runs on its own thread, and each time
one of them releases the GIL (a numpy, torch, XGBoost or SQLite call) the interpreter
hands it to another. Measured in-process on 2 cores, 4 threads calling Recommend at once
cost 1.6× (fallback), 1.6× (XGBoost) and 2.1× (TorchRec) the CPU per call of one thread.
Here one event-loop thread per process runs the latency-critical methods (``inline``)
to completion, one at a time, so a released GIL has no one to go to; more cores are
used by more processes (``serving.processes``), not more threads.

The services stay synchronous: each sync unary handler is wrapped into an async one
that calls it on the loop thread (``inline`` methods) or on the ``workers`` thread pool
(the rest: admin calls may block for a while and must not stall Recommend). The sync
interceptors (error mapping, auth) are applied to the handler unchanged, so a request
meets the same checks and the same status mapping under both runtimes. Streaming
handlers run on the thread pool as grpc's aio server does by itself.

The event loop lives on a thread of its own, so ``ServingServer`` keeps its synchronous
``start`` / ``stop`` / ``wait_for_termination``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent import futures
from typing import Collection, Sequence

import grpc

log = logging.getLogger(__name__)

_GRPC_LOGGER = "grpc._cython.cygrpc"

class _Aborted(Exception):
    """``context.abort`` of a sync handler on the aio server: the status is already set on
    the aio context; the wrapper turns this into an empty reply with that status."""


class SyncContext:
    """The parts of ``grpc.ServicerContext`` a sync handler calls, over an aio context.

    Everything but ``abort`` is synchronous on both; ``abort`` is a coroutine on aio, so
    here it sets code, details and trailing metadata and raises ``_Aborted`` (which, like
    the sync server's abort exception, unwinds the handler)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata=()) -> None:
        if trailing_metadata:
            self._ctx.set_trailing_metadata(trailing_metadata)
        self._ctx.set_code(code)
        self._ctx.set_details(details)
        raise _Aborted(details)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


class InlineInterceptor(grpc.aio.ServerInterceptor):
    """Applies the sync ``interceptors`` (first = outermost, as on grpc's sync server) and
    turns sync unary handlers into async ones: ``inline`` methods run on the loop thread,
    the others on ``pool``."""

    def __init__(self, interceptors: Sequence[grpc.ServerInterceptor], pool: futures.Executor,
                 inline: Collection[str]) -> None:
        self._interceptors = tuple(reversed(interceptors))
        self._pool = pool
        self._inline = frozenset(inline)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler.unary_unary or asyncio.iscoroutinefunction(handler.unary_unary):
            # grpc's own servicers (reflection, the health Watch stream): public, and the
            # sync interceptors cannot wrap an async or aio-run streaming handler.
            # build_server refuses Sightline services with streaming methods under asyncio.
            return handler
        for interceptor in self._interceptors:
            handler = interceptor.intercept_service(lambda _details, h=handler: h, handler_call_details)
            if handler is None:
                return None
        inner = handler.unary_unary
        if handler_call_details.method in self._inline:
            async def behaviour(request, context):
                try:
                    return inner(request, SyncContext(context))
                except _Aborted:
                    return None
        else:
            pool = self._pool

            async def behaviour(request, context):
                try:
                    return await asyncio.get_running_loop().run_in_executor(pool, inner, request, SyncContext(context))
                except _Aborted:
                    return None
        return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class _GoneCallers(logging.Filter):
    """grpc's aio server logs a traceback at ERROR (``ExecuteBatchError``) for every reply
    it could not send because the caller had gone: its deadline passed or it cancelled.
    Under overload that is one traceback per shed call, for what the sync server drops
    silently and the caller already sees as DEADLINE_EXCEEDED. Counted here instead, and
    reported once when the server stops."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and exc.__name__ == "ExecuteBatchError":
            self.count += 1
            return False
        return True


class LoopServer:
    """A ``grpc.aio`` server on an event loop in a thread of its own, driven like
    ``grpc.Server`` (``start``, ``stop(grace).wait()``, ``wait_for_termination``) and built
    like it (``add_insecure_port``, ``add_secure_port``, ``add_generic_rpc_handlers``, ...
    run on the loop)."""

    def __init__(self, *, interceptors: Sequence[grpc.ServerInterceptor], inline: Collection[str],
                 workers: int, options) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serving")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="serving-loop", daemon=True)
        self._thread.start()
        intercept = InlineInterceptor(interceptors, self._pool, inline)

        async def make():
            return grpc.aio.server(migration_thread_pool=self._pool, interceptors=[intercept], options=options)

        self._server = self._call(make())
        self._stopping = False
        self._terminated = threading.Event()
        self._gone = _GoneCallers()
        logging.getLogger(_GRPC_LOGGER).addFilter(self._gone)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _sync(self, fn, *args):
        async def call():
            return fn(*args)
        return self._call(call())

    # grpc.Server's registration surface (the generated add_*_to_server functions use these)
    def add_generic_rpc_handlers(self, handlers) -> None:
        self._sync(self._server.add_generic_rpc_handlers, handlers)

    def add_registered_method_handlers(self, service_name, method_handlers) -> None:
        self._sync(self._server.add_registered_method_handlers, service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._sync(self._server.add_insecure_port, address)

    def add_secure_port(self, address: str, credentials) -> int:
        return self._sync(self._server.add_secure_port, address, credentials)

    @property
    def aio_server(self) -> grpc.aio.Server:
        """The wrapped server, for helpers that register themselves (reflection)."""
        return self._server

    def start(self) -> None:
        self._call(self._server.start())

    def stop(self, grace: float | None) -> threading.Event:
        """Stop like ``grpc.Server.stop``: the returned event's ``wait()`` blocks until done."""
        if not self._stopping:
            self._stopping = True

            async def stop():
                try:
                    await self._server.stop(grace)
                finally:
                    logging.getLogger(_GRPC_LOGGER).removeFilter(self._gone)
                    if self._gone.count:
                        log.info("%d replies were not sent because their callers had gone (deadline passed or "
                                 "cancelled)", self._gone.count)
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    self._terminated.set()
                    self._loop.stop()

            asyncio.run_coroutine_threadsafe(stop(), self._loop)
        return self._terminated

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """True when ``timeout`` passed before the server stopped (as ``grpc.Server``)."""
        return not self._terminated.wait(timeout)
