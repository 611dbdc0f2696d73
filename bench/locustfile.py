"""Locust load test of the gRPC RecommendationService (locust's documented gRPC pattern:
gevent-patched grpcio, a client interceptor that fires locust request events, a
``GrpcUser`` base class holding the stub).

Run headless by ``python -m bench.serve``; by hand::

    .venv/bin/locust -f bench/locustfile.py --headless -u 20 -r 20 -t 30s \\
        --host 127.0.0.1:50051 --sl-requests requests.bin --sl-api-key slk_... --sl-rps-per-user 5

``--sl-requests`` is a file of length-prefixed serialized ``RecommendRequest``s (the
simulated request mix); every user replays them round-robin from its own offset.
``--sl-method echo`` calls the same method on the echo baseline server. Raw latencies
(ms, with their start times) go to ``--sl-out`` as JSON when the run ends, so the bench
computes exact percentiles (locust's own stats round them to whole milliseconds).
"""

from __future__ import annotations

import itertools
import json
import struct
import time

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant_throughput, events, task
from locust.exception import LocustError

grpc_gevent.init_gevent()   # grpcio must yield to gevent instead of blocking the process

from proto import serving_pb2, serving_pb2_grpc  # noqa: E402

_SAMPLES: list[tuple[float, float, bool]] = []   # (start epoch s, latency ms, ok)
_REQUESTS: list[bytes] = []


@events.init_command_line_parser.add_listener
def _args(parser) -> None:
    parser.add_argument("--sl-requests", default="", help="file of length-prefixed RecommendRequest bytes")
    parser.add_argument("--sl-api-key", default="", help="API key sent as x-api-key")
    parser.add_argument("--sl-rps-per-user", type=float, default=5.0, help="requests per second per user")
    parser.add_argument("--sl-out", default="", help="where to write the raw latencies (JSON)")
    parser.add_argument("--sl-timeout", type=float, default=2.0, help="per-call deadline in seconds")


@events.test_start.add_listener
def _load(environment, **_kw) -> None:
    path = environment.parsed_options.sl_requests
    if not path:
        raise LocustError("--sl-requests is required (python -m bench.serve writes it)")
    data = open(path, "rb").read()
    offset = 0
    while offset < len(data):
        (n,) = struct.unpack_from(">I", data, offset)
        _REQUESTS.append(data[offset + 4: offset + 4 + n])
        offset += 4 + n


@events.quitting.add_listener
def _dump(environment, **_kw) -> None:
    out = environment.parsed_options.sl_out
    if out:
        with open(out, "w") as f:
            json.dump({"samples": _SAMPLES}, f)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Times every unary call and reports it to locust (and to the raw sample list)."""

    def __init__(self, environment) -> None:
        self.env = environment

    def intercept_unary_unary(self, continuation, client_call_details, request):
        started_at = time.time()
        start = time.perf_counter()
        exception = None
        response = continuation(client_call_details, request)
        try:
            size = response.result().ByteSize()
        except grpc.RpcError as exc:
            exception, size = exc, 0
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        _SAMPLES.append((started_at, elapsed_ms, exception is None))
        self.env.events.request.fire(request_type="grpc", name=client_call_details.method,
                                     response_time=elapsed_ms, response_length=size, exception=exception,
                                     context=None, response=None)
        return response


class GrpcUser(User):
    """Base class from locust's gRPC example: a channel with the interceptor, and a stub."""

    abstract = True
    stub_class = None

    def __init__(self, environment) -> None:
        super().__init__(environment)
        if self.host is None or self.stub_class is None:
            raise LocustError("set --host host:port and stub_class")
        self._channel = grpc.intercept_channel(grpc.insecure_channel(self.host), LocustInterceptor(environment))
        self.stub = self.stub_class(self._channel)

    def on_stop(self) -> None:
        self._channel.close()


class RecommendUser(GrpcUser):
    """An app calling Recommend with the simulated request mix at a constant rate."""

    stub_class = serving_pb2_grpc.RecommendationServiceStub
    _ids = itertools.count()

    def wait_time(self):
        return constant_throughput(self.environment.parsed_options.sl_rps_per_user)(self)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self._metadata = [("x-api-key", opts.sl_api_key)]
        self._timeout = opts.sl_timeout
        start = next(self._ids) * 7919
        self._requests = itertools.cycle(_REQUESTS[start % len(_REQUESTS):] + _REQUESTS[:start % len(_REQUESTS)])

    @task
    def recommend(self) -> None:
        request = serving_pb2.RecommendRequest.FromString(next(self._requests))
        try:
            self.stub.Recommend(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError:
            pass   # already reported by the interceptor
