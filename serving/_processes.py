"""Several server processes on one port: ``ServerGroup``.

Why processes: a Recommend is mostly Python, and one process runs Python on one core at
a time (the GIL); N processes bound with SO_REUSEPORT each take a share of the
connections the kernel accepts. What makes that safe is state that does not live in a
process: frequency caps in a shared ``FrequencyStore`` (``serving.frequency_store``;
``memory`` is refused with more than one process), budgets paced by every process
against the totals in the campaign store (``serving._spend.SpendLedger``: however
unevenly the connections spread, each campaign spends its whole budget, not 1/N of it),
and API-key rate limits kept in one bucket file the group creates
(``serving._ratelimit.SharedRateLimiter``). The campaign snapshot and
the models are per process; the item statistics come from one refresher process the
group starts for all of them (``serving._item_stats.ItemStatsHub``; each process reading
them itself cost N times the reads).

The children are started with ``spawn`` (grpc's threads do not survive ``fork``); each
builds its services from ``factory(settings)``, reports its bound port and pid through a
pipe, and stops cleanly on SIGTERM, sending back the Recommend servicer's ``stats()``.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from serving.errors import ServerConfigError, Unavailable

log = logging.getLogger(__name__)

DEFAULT_FACTORY = "serving._app:app_services"
"""``module:function`` building a process's services: ``function(settings) -> list[Service]``."""


def _resolve(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main(settings, host: str, port: int, factory: str, warm: str | None, conn, index: int) -> None:
    """One server process: build, bind with SO_REUSEPORT, serve until SIGTERM, report stats."""
    from serving._server import build_server

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s serving[{index}] %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the parent decides when to stop
    try:
        services = _resolve(factory)(settings)
        server = build_server(settings, services, host=host, port=port, reuse_port=True)
        server.start()
        if warm:
            _resolve(warm)(services)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", server.port))
    while not stop.wait(0.2):
        if conn.poll() and conn.recv() == "stop":      # a parent that cannot signal (tests) asks through the pipe
            break
    server.stop(grace=5.0)
    stats: dict = {}
    for service in server.services:
        if hasattr(service.servicer, "stats"):
            stats = service.servicer.stats()
    try:
        conn.send(("stats", stats))
    except (BrokenPipeError, OSError):
        pass


@dataclass
class ServerGroup:
    """``serving.processes`` server processes sharing ``host:port``.

    ``start()`` returns once every process serves (or raises naming the one that could
    not start); ``stop()`` drains them like a single server and returns each process's
    Recommend ``stats()``. ``factory`` and ``warm`` are ``module:function`` references, so
    the spawned children can import them.
    """

    settings: object
    host: str | None = None
    port: int | None = None
    factory: str = DEFAULT_FACTORY
    warm: str | None = None
    """Called in each child with its services after the server started, before it reports
    ready (e.g. wait for the first item-statistics read)."""
    item_stats: bool = True
    """Start the group's shared item-statistics refresher (with more than one process). Off
    for services that read no item statistics (the benchmark's echo baseline): the refresher
    imports Feast at start, ~5 s of CPU beside the servers."""
    start_timeout_s: float = 300.0
    processes: int | None = None
    """Defaults to ``settings.serving.processes``."""
    _children: list = field(default_factory=list, repr=False)
    _conns: list = field(default_factory=list, repr=False)
    _hub: object = field(default=None, repr=False)
    _tmp: str | None = field(default=None, repr=False)
    bound_port: int = 0

    @property
    def address(self) -> str:
        return f"{self.host or self.settings.serving.host}:{self.bound_port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._children]

    @property
    def rate_limit_store(self) -> str:
        """Where the group's API-key buckets live: ``file`` when it made a bucket file for its
        processes, else the settings' choice (``redis``, ``memory``, or the configured file)."""
        return "file" if self._tmp is not None else self.settings.rate_limit_store_kind

    @property
    def item_stats_pid(self) -> int | None:
        """The pid of the group's item-statistics refresher (None with one process: it has its own)."""
        return self._hub.pid if self._hub is not None else None

    def start(self) -> "ServerGroup":
        n = self.processes or self.settings.serving.processes
        if n > 1 and self.settings.frequency_store_kind == "memory":
            raise ServerConfigError("several server processes need a shared frequency store; set "
                                    "serving.frequency_store to sqlite or redis")
        host = self.host or self.settings.serving.host
        port = self.settings.serving.port if self.port is None else self.port
        holder = None
        if port == 0:   # pick one port for every child: a bound, non-listening socket reserves it
            holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind((host.strip("[]"), 0))
            port = holder.getsockname()[1]
        self.bound_port = port
        ctx = multiprocessing.get_context("spawn")
        deadline = time.monotonic() + self.start_timeout_s
        settings = self.settings
        try:
            if n > 1 and self.item_stats and settings.serving.item_stats_socket is None:
                from pathlib import Path

                from serving._item_stats import ItemStatsHub

                self._hub = ItemStatsHub(settings).start()
                serving = settings.serving.model_copy(update={"item_stats_socket": Path(self._hub.address)})
                settings = settings.model_copy(update={"serving": serving})
            shared_limits = settings.serving.rate_limit_store != "memory" and settings.rate_limit_store_kind != "redis"
            if n > 1 and settings.serving.rate_limit_file is None and shared_limits:   # one file for the group
                from pathlib import Path

                from serving._ratelimit import create_bucket_file

                self._tmp = tempfile.mkdtemp(prefix="sightline-ratelimit-")
                buckets = create_bucket_file(Path(self._tmp) / "buckets")
                settings = settings.model_copy(update={"serving": settings.serving.model_copy(
                    update={"rate_limit_file": buckets})})
            # one after the other: the first process creates any missing tables (experiments,
            # caps) before the next one starts — concurrent CREATE TABLE raced ("already exists")
            for i in range(n):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_child_main, name=f"sightline-serving-{i}", daemon=False,
                                   args=(settings, host, port, self.factory, self.warm, child, i))
                proc.start()
                child.close()
                self._children.append(proc)
                self._conns.append(parent)
                while not parent.poll(0.2):
                    if not proc.is_alive() or time.monotonic() > deadline:
                        raise Unavailable(f"server process {i} did not start (exit code {proc.exitcode}); "
                                          "see its log above")
                try:
                    kind, value = parent.recv()
                except EOFError:
                    proc.join(5)
                    raise Unavailable(f"server process {i} exited while starting (exit code {proc.exitcode}); "
                                      "see its log above") from None
                if kind == "error":
                    raise ServerConfigError(f"server process {i} could not start: {value}")
        except BaseException:
            self.stop(grace=0)
            raise
        finally:
            if holder is not None:
                holder.close()
        log.info("serving on %s with %d processes (pids %s)", self.address, n, self.pids)
        return self

    def failed(self) -> list[tuple[int, int | None]]:
        """(index, exit code) of every child that exited on its own."""
        return [(i, p.exitcode) for i, p in enumerate(self._children) if not p.is_alive()]

    def stop(self, grace: float = 5.0) -> list[dict]:
        """SIGTERM every child (each finishes in-flight calls and flushes its event log), then
        collect their stats; a child that does not stop within ``grace`` + 30 s is killed."""
        for proc in self._children:
            if proc.is_alive():
                proc.terminate()
        stats: list[dict] = []
        deadline = time.monotonic() + grace + 30.0
        for proc, conn in zip(self._children, self._conns):
            got: dict = {}
            while proc.is_alive() or conn.poll():
                if conn.poll(0.2):
                    try:
                        kind, value = conn.recv()
                    except EOFError:
                        break
                    if kind == "stats":
                        got = value
                elif time.monotonic() > deadline:
                    log.error("server process %s did not stop in time; killing it", proc.pid)
                    proc.kill()
                    break
            proc.join(5)
            stats.append(got)
            conn.close()
        self._children, self._conns = [], []
        if self._hub is not None:
            self._hub.stop()
            self._hub = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        return stats

    def __enter__(self) -> "ServerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_SHARED_FIGURES = frozenset({"caps_users"})
"""Figures every process reads from the same shared store: not added up."""


def sum_stats(stats: list[dict]) -> dict:
    """The numeric counters of several processes' ``stats()`` added up (others from the first)."""
    out: dict = {}
    for s in stats:
        for k, v in s.items():
            if k in _SHARED_FIGURES:
                out[k] = max(out.get(k, 0), v)
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            elif isinstance(v, dict):
                out[k] = sum_stats([out.get(k, {}) if isinstance(out.get(k), dict) else {}, v])
            else:
                out.setdefault(k, v)
    return out
