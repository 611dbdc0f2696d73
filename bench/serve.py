"""Serving latency and throughput: Recommend vs a bare echo service, same server setup.

Builds the simulated world (default: 50,000 products, 1,000 campaigns, 3,000 creatives,
plus 60 run-of-network campaigns so every request has its 50 ad candidates), loads it
into a campaign store, and runs the real server (``build_server`` +
``recommendation_service``: API-key auth, error interceptor, health, reflection; Feast
user reads, the item-statistics refresher and the Kafka event log on a local broker) in
its own process. The simulated request mix (3 ad slots, 10 suggestions; 50 ad and ~200
product candidates per request) is replayed at a constant rate by

- an **open-loop** client (headline figures) over ``OPENLOOP_CHANNELS`` (64) connections:
  request ``i`` is due at ``i / rate`` and its latency counts from that due time, so neither
  a client nor a server stall can hide by lowering the offered rate. By default it is
  ``.tools/sightline-loadgen`` (``bench/loadgen``, Go, built by ``make install`` when Go is
  installed): a compiled client that sends the pre-serialized requests with a raw-bytes
  codec, wakes at each due time on a timerfd and costs ~0.3 ms of CPU per call on this
  machine. ``--client python`` runs the former client instead, a separate process with
  plain grpcio futures (~0.8 ms per call, taken from the 2 cores the server under test
  uses); both write the same samples;
- **locust** (``bench/locustfile.py``, the documented gRPC load test, headless) at
  100 requests/s (``locust_*`` keys). Its gevent gRPC user costs the client a few ms of
  CPU per call on the same 2 cores, so it is not used to search the maximum rate.

Figures: p50/p99 at 100 requests/s (medians over repeated windows); the highest rate
sustained with p99 ≤ 50 ms and ≥ 90 % of the offered rate answered (steps up until one
fails); the same for an echo ``RecommendationService`` (returns the request id) served
by the same ``build_server`` setup and client in the same run, and the ratios; the
server's CPU per request (its process and children) at 100 requests/s. ``--quick``: a
smaller world, no Kafka and no Feast (in-memory event sink, context-only), short
windows, and only one 300 requests/s step.

``--processes N`` (default: one per core) runs both servers as ``serving.ServerGroup``s
of N processes on one port, as ``sightline serve --processes N`` does.

Usage: python -m bench.serve [--quick] [--processes N] [--client {go,python}]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench._common import emit, median, progress

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / ".tools" / "sightline-loadgen"
"""The Go open-loop client (``bench/loadgen``), built by ``scripts/install.sh`` when Go is installed."""
P99_LIMIT_MS = 50.0
OPENLOOP_CHANNELS = 64
"""Connections the open-loop client spreads its calls over (many apps, not one). The kernel
hands *connections* to the server processes (SO_REUSEPORT hashes each one): 16 often split
11/5, so one process took ~70 % of the calls and collapsed at 300 requests/s while the other
idled; 64 split 30–34 per process in five of five tries (ad-hoc, 2026-12-04)."""


# ----------------------------------------------------------------------------- server process
class _CountingSink:
    """Event sink for --quick: counts events without keeping them."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic, message) -> None:
        self.sent += 1

    def send_many(self, topic, messages) -> None:
        self.sent += len(messages)

    def start(self):
        return self

    def close(self, timeout: float = 10.0) -> None:
        pass

    @property
    def stats(self) -> dict:
        return {"sent": self.sent, "failed": 0, "queued": 0}


def _bench_services(settings, feast: bool):
    from serving import KafkaEventLog, recommendation_service

    events = KafkaEventLog.from_settings(settings, settings.kafka.bootstrap) if settings.kafka.bootstrap else _CountingSink()
    return [recommendation_service(settings, events=events, feature_store=feast)]


def services_full(settings):
    """Recommend with Feast user reads and the Kafka event log (the full run's server)."""
    return _bench_services(settings, feast=True)


def services_quick(settings):
    """Recommend without Feast or Kafka (``--quick``)."""
    return _bench_services(settings, feast=False)


def services_echo(settings):
    """The bare echo RecommendationService (the baseline)."""
    from serving import echo_service

    return [echo_service()]


def wait_item_stats(services, timeout_s: float = 180.0) -> None:
    """Measure serving, not the start-up read of every item's statistics."""
    items = [getattr(s.servicer, "_item_features", None) for s in services]
    deadline = time.monotonic() + timeout_s
    for it in items:
        while it is not None and getattr(it, "refreshes", 1) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)


def _serve(args) -> int:
    """Run the server (child process) until SIGTERM; write its port, then its stats.

    ``--processes N`` > 1 runs a ``serving.ServerGroup`` (N processes on one port, caps in the
    shared SQLite store), as ``sightline serve --processes N`` does."""
    from serving import ApiKeyStore, ServerGroup, build_server, sum_stats
    from sightline.settings import load_settings

    kafka = {"bootstrap": args.bootstrap} if args.bootstrap else {}
    settings = load_settings(env={}, data_dir=Path(args.data_dir), kafka=kafka,
                             serving={"port": 0, "processes": args.processes, "runtime": args.runtime})
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    if args.processes > 1:
        factory = ("bench.serve:services_echo" if args.serve == "echo" else
                   "bench.serve:services_full" if args.feast else "bench.serve:services_quick")
        group = ServerGroup(settings, factory=factory, warm="bench.serve:wait_item_stats",
                            item_stats=args.serve != "echo").start()
        Path(args.ready_file).write_text(str(group.bound_port))
        while not stop["flag"]:
            time.sleep(0.2)
        Path(args.stats_file).write_text(json.dumps(sum_stats(group.stop(2)), default=str))
        return 0
    services = services_echo(settings) if args.serve == "echo" else _bench_services(settings, feast=args.feast)
    servicer = services[0].servicer if args.serve == "recommend" else None
    keys = ApiKeyStore.from_settings(settings)
    server = build_server(settings, services, keys).start()
    wait_item_stats(services)
    Path(args.ready_file).write_text(str(server.port))
    while not stop["flag"]:
        time.sleep(0.2)
    server.stop(2)
    stats = servicer.stats() if servicer is not None else {}
    Path(args.stats_file).write_text(json.dumps(stats, default=str))
    return 0


class _Server:
    def __init__(self, mode: str, data_dir: Path, bootstrap: str | None, feast: bool, processes: int = 1,
                 runtime: str = "asyncio") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-serve-{mode}-"))
        ready, self.stats_file = self.dir / "port", self.dir / "stats.json"
        cmd = [sys.executable, "-m", "bench.serve", "--serve", mode, "--data-dir", str(data_dir),
               "--ready-file", str(ready), "--stats-file", str(self.stats_file), "--processes", str(processes),
               "--runtime", runtime]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        if feast:
            cmd.append("--feast")
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        deadline = time.monotonic() + 300
        while not ready.exists() or not ready.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {mode} server did not start (exit {self.proc.poll()})")
            time.sleep(0.2)
        self.port = int(ready.read_text())

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        stats = json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}
        shutil.rmtree(self.dir, ignore_errors=True)
        return stats


# ----------------------------------------------------------------------------- load runs
def _read_requests(path: Path) -> list[bytes]:
    data = Path(path).read_bytes()
    out, offset = [], 0
    while offset < len(data):
        (n,) = struct.unpack_from(">I", data, offset)
        out.append(data[offset + 4: offset + 4 + n])
        offset += 4 + n
    return out


def _openloop_client(args) -> int:
    """Child process: send on a fixed schedule with grpc futures (no gevent), record latencies.

    Open loop: request ``i`` is due at ``start + i / rate`` whatever happened to the earlier
    ones, and its latency counts from that due time, not from when this process got round
    to sending it — so a client (or server) stall shows up in the latencies instead of
    silently lowering the offered rate (coordinated omission). ``--channels`` spreads the
    calls round-robin over several connections, as many apps would."""
    import grpc

    from proto import serving_pb2, serving_pb2_grpc

    requests = [serving_pb2.RecommendRequest.FromString(b) for b in _read_requests(Path(args.requests))]
    channels = [grpc.insecure_channel(f"127.0.0.1:{args.port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(max(1, args.channels))]
    stubs = [serving_pb2_grpc.RecommendationServiceStub(c) for c in channels]
    for c in channels:   # connect every channel before the clock starts
        grpc.channel_ready_future(c).result(timeout=10)
    metadata = [("x-api-key", args.key)]
    samples: list = []
    futures = []
    rate, n = args.openloop, int(args.openloop * args.seconds)
    t_start = time.perf_counter() + 0.05
    wall_start = time.time() + 0.05
    for i in range(n):
        due = t_start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        future = stubs[i % len(stubs)].Recommend.future(requests[i % len(requests)], metadata=metadata, timeout=2.0)

        def done(f, due=due):
            samples.append((wall_start + (due - t_start), (time.perf_counter() - due) * 1000.0, f.exception() is None))

        future.add_done_callback(done)
        futures.append(future)
    for f in futures:
        try:
            f.result()
        except Exception:  # noqa: BLE001 - counted as not ok
            pass
    time.sleep(0.1)
    Path(args.out).write_text(json.dumps({"samples": samples}))
    for c in channels:
        c.close()
    return 0


def _openloop(port: int, rate: float, seconds: float, requests_file: Path, key: str,
              client: str | None = None) -> list[tuple[float, float, bool]]:
    """Open-loop samples ``(due epoch s, latency ms, ok)`` over ``OPENLOOP_CHANNELS`` connections.

    ``client``: "go" (``LOADGEN``), "python" (``_openloop_client`` in a child process), or
    None for the Go client when it is built and the Python one otherwise."""
    if client is None:
        client = "go" if LOADGEN.exists() else "python"
    out = Path(tempfile.mktemp(suffix=".json"))
    if client == "go":
        if not LOADGEN.exists():
            raise SystemExit(f"{LOADGEN} is missing: run 'make install' with Go installed, or pass --client python")
        cmd = [str(LOADGEN), "-target", f"127.0.0.1:{port}", "-requests", str(requests_file), "-key", key,
               "-rate", str(rate), "-seconds", str(seconds), "-channels", str(OPENLOOP_CHANNELS),
               "-timeout", "2", "-out", str(out)]
        done = subprocess.run(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=seconds + 120)
        if done.returncode != 0:
            raise SystemExit(f"the Go open-loop client failed (exit {done.returncode}): {done.stderr.strip()}")
        if done.stderr.strip():
            progress("  " + done.stderr.strip().splitlines()[-1])
    else:
        subprocess.run([sys.executable, "-m", "bench.serve", "--openloop", str(rate), "--port", str(port),
                        "--seconds", str(seconds), "--requests", str(requests_file), "--key", key, "--out", str(out),
                        "--channels", str(OPENLOOP_CHANNELS)],
                       cwd=ROOT, check=True, timeout=seconds + 120)
    samples = [tuple(x) for x in json.loads(out.read_text())["samples"]]
    out.unlink()
    return samples


def _locust(port: int, rate: float, seconds: float, requests_file: Path, key: str) -> list[tuple[float, float, bool]]:
    per_user = 5.0
    users = max(1, round(rate / per_user))
    out = Path(tempfile.mktemp(suffix=".json"))
    cmd = [str(ROOT / ".venv/bin/locust"), "-f", str(ROOT / "bench/locustfile.py"), "--headless", "--only-summary",
           "-u", str(users), "-r", str(users), "-t", f"{int(seconds)}s", "--stop-timeout", "2",
           "--host", f"127.0.0.1:{port}", "--loglevel", "ERROR",
           "--sl-requests", str(requests_file), "--sl-api-key", key, "--sl-rps-per-user", str(rate / users),
           "--sl-out", str(out)]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=False, timeout=seconds + 120)
    if not out.exists():
        raise SystemExit("locust wrote no samples; run the command by hand to see why: " + " ".join(cmd))
    samples = [tuple(s) for s in json.loads(out.read_text())["samples"]]
    out.unlink()
    return samples


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _window(samples, t0: float, t1: float) -> dict:
    inside = [s for s in samples if t0 <= s[0] < t1]
    ok = [s[1] for s in inside if s[2]]
    return {"n": len(inside), "errors": len(inside) - len(ok), "rps": len(ok) / max(t1 - t0, 1e-9),
            "p50_ms": _pct(ok, 0.50), "p99_ms": _pct(ok, 0.99)}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants (Linux /proc; 0 elsewhere)."""
    try:
        stats = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    except OSError:
        return 0.0
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        total += stats.get(q, (0, 0))[1]
        todo += [c for c, (parent, _) in stats.items() if parent == q]
    return total / os.sysconf("SC_CLK_TCK")


def _measure(port: int, requests_file: Path, key: str, *, repeats: int, window_s: float,
             steps: list[int], step_s: float, client=None, server_pid: int | None = None) -> dict:
    client = client or _locust
    warm = 3.0
    cpu0, t0 = (_tree_cpu_s(server_pid), time.monotonic()) if server_pid else (0.0, 0.0)
    samples = client(port, 100, warm + repeats * window_s + 3, requests_file, key)
    server_cpu = ((_tree_cpu_s(server_pid) - cpu0) / max(len(samples), 1) * 1000.0) if server_pid else None
    start = min(s[0] for s in samples) + warm
    wins = [_window(samples, start + i * window_s, start + (i + 1) * window_s) for i in range(repeats)]
    result = {"p50_ms": median([w["p50_ms"] for w in wins]), "p99_ms": median([w["p99_ms"] for w in wins]),
              "rps_at_100": median([w["rps"] for w in wins]), "errors_at_100": sum(w["errors"] for w in wins),
              "windows": wins, "steps": [],
              "server_cpu_ms_per_request": None if server_cpu is None else round(server_cpu, 3)}
    at_100_ok = result["p99_ms"] <= P99_LIMIT_MS and result["rps_at_100"] >= 90 and result["errors_at_100"] == 0
    best = result["rps_at_100"] if at_100_ok else 0.0
    for rate in steps:
        samples = client(port, rate, step_s + 5, requests_file, key)
        t0 = min(s[0] for s in samples) + 2
        w = _window(samples, t0, t0 + step_s)
        w["offered_rps"] = rate
        w["ok"] = w["p99_ms"] <= P99_LIMIT_MS and w["rps"] >= 0.9 * rate and w["errors"] <= 0.01 * max(w["n"], 1)
        result["steps"].append(w)
        progress(f"  {rate} rps offered: {w['rps']:.0f} answered, p50 {w['p50_ms']:.1f} ms, "
                 f"p99 {w['p99_ms']:.1f} ms -> {'ok' if w['ok'] else 'over the limit'}")
        if not w["ok"]:
            break
        best = max(best, w["rps"])
    result["max_rps_p99_under_50ms"] = round(best, 1)
    return result


# ----------------------------------------------------------------------------- world
def _build(data_dir: Path, quick: bool, n_requests: int):
    from campaigns import Advertiser, Bid, Budget, Campaign, CampaignStore, Creative, Schedule
    from proto import events_pb2, serving_pb2
    from simulation import WorldConfig, build_world, campaign_window, context_proto, load_world, sample_contexts
    from sightline.settings import load_settings

    config = (WorldConfig(n_users=5_000, n_products=10_000, n_advertisers=100, n_campaigns=300, n_creatives=900)
              if quick else WorldConfig())
    world = build_world(config)
    settings = load_settings(env={}, data_dir=data_dir)
    store = CampaignStore.from_settings(settings)
    counts = load_world(world, store)
    start, end = campaign_window(world)
    # run-of-network campaigns (no category targeting): every request has >= 50 ad candidates
    ron_adv = [Advertiser(id=f"ron-{i}", name=f"Network {i}", currency="EUR") for i in range(60)]
    ron = [Campaign(id=f"ron-c{i}", advertiser_id=f"ron-{i}", name=f"network {i}", status="active",
                    schedule=Schedule(start=start, end=end), budget=Budget(daily=1e6, currency="EUR"),
                    bid=Bid(strategy="CPM", amount=0.5 + 0.01 * i),
                    creatives=(Creative(id=f"ron-cr{i}", campaign_id=f"ron-c{i}", headline=f"Network offer {i}",
                                        landing_url=f"https://ads.example.com/{i}"),))
           for i in range(60)]
    store.bulk_load(advertisers=ron_adv, campaigns=ron, actor="bench")
    store.close()
    ctx = sample_contexts(world, n_requests * 2, seed=11, start_time=start)
    blobs, personal_users = [], []
    for i in range(len(ctx)):
        if not ctx.consent_context[i]:
            continue
        request = serving_pb2.RecommendRequest(
            app_id="bench-app", user_id=world.user_ids[int(ctx.user[i])],
            consent=events_pb2.Consent(context=True, personalization=bool(ctx.consent_personalization[i]),
                                       measurement=bool(ctx.consent_measurement[i])),
            context=context_proto(world, ctx, i), surfaces=serving_pb2.Surfaces(ad_slots=3, suggestions=10))
        blobs.append(request.SerializeToString())
        if request.consent.personalization:
            personal_users.append(request.user_id)
        if len(blobs) >= n_requests:
            break
    return settings, counts, blobs, world, sorted(set(personal_users))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small world, no Kafka/Feast, 2 short windows, one 300 rps step (open-loop only; ~1.5 min)")
    parser.add_argument("--processes", type=int, default=max(1, os.cpu_count() or 1),
                        help="server processes (serving.processes; default: one per core, the setting this "
                             "machine should run). The echo baseline runs with the same number")
    parser.add_argument("--ranker", choices=["fallback", "xgboost", "torchrec", "logreg"], default="fallback",
                        help="what scores the candidates: the fallback ranker (default; no model registered) or a "
                             "model of this kind trained on synthetic impressions and registered as 'production' "
                             "(its cost per call, not its quality: results go to serve.<kind>.json)")
    parser.add_argument("--client", choices=["go", "python"], default="go",
                        help="the open-loop client of the headline figures: go (default; .tools/sightline-loadgen, "
                             "built by 'make install' when Go is installed; ~0.3 ms of CPU per call) or python "
                             "(grpcio futures; ~0.8 ms of CPU per call on the cores the server uses)")
    parser.add_argument("--runtime", choices=["asyncio", "threads"], default="asyncio",
                        help="serving.runtime of the servers (Recommend and the echo alike): asyncio (default; one "
                             "event-loop thread per process) or threads (grpc's thread-pool server)")
    parser.add_argument("--serve", choices=["echo", "recommend"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--stats-file", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--feast", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--openloop", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--channels", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return _serve(args)
    if args.openloop:
        return _openloop_client(args)

    if args.client == "go" and not LOADGEN.exists():
        parser.exit(2, f"{parser.prog}: the Go open-loop client {LOADGEN.relative_to(ROOT)} is missing: run "
                       "'make install' with Go installed (https://go.dev/dl/), or pass --client python\n")
    openloop = partial(_openloop, client=args.client)
    quick = args.quick
    started = time.time()
    load_at_start = round(os.getloadavg()[0], 2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    data_dir = tmp / "data"
    progress("building the simulated world and loading the campaign store ...")
    settings, counts, blobs, world, personal_users = _build(data_dir, quick, 1_000 if quick else 5_000)
    if args.ranker != "fallback":
        from models import Registry, train_and_register
        from models.testing import synthetic_impressions

        progress(f"training a {args.ranker} model on synthetic impressions and registering it as 'production' ...")
        record, _ = train_and_register(args.ranker, synthetic_impressions(20_000, n_items=500), Registry(settings),
                                       alias="production", progress=False, work_dir=tmp / "model-work")
        progress(f"serving with model {record.version}")
    requests_file = tmp / "requests.bin"
    with open(requests_file, "wb") as f:
        for b in blobs:
            f.write(struct.pack(">I", len(b)) + b)
    from serving import ApiKeyStore

    keys = ApiKeyStore.from_settings(settings)
    key = keys.create_key("bench", ["recommend", "feedback"], rate_per_s=1e6, burst=1_000_000)
    keys.close()
    broker = None
    bootstrap = None
    if not quick:
        from features import apply_repo
        from sightline.settings import load_settings
        from sightline.stack import LocalKafka, ensure_topics, project_topics

        progress("starting a local Kafka broker and applying the Feast repo ...")
        broker = LocalKafka(load_settings(env={}, data_dir=tmp / "kafka", kafka={"port": _free_port(), "heap_mb": 512}))
        bootstrap = broker.start()
        ensure_topics(bootstrap, project_topics(settings))
        apply_repo(settings)
        from bench._world_features import write_world_features

        progress(f"writing online features: {len(personal_users):,} users of the mix, every item and campaign ...")
        counts["online_rows"] = write_world_features(settings, world, personal_users)
    del world
    repeats, window_s = (2, 4.0) if quick else (5, 10.0)
    steps, step_s = ([300] if quick else [150, 200, 250, 300, 400, 500, 650, 800]), (5.0 if quick else 10.0)
    locust_repeats = 1 if quick else 3
    results = {}
    stats = {}
    try:
        for mode in ("echo", "recommend"):
            progress(f"{mode}: starting the server ...")
            server = _Server(mode, data_dir, bootstrap if mode == "recommend" else None,
                             feast=not quick and mode == "recommend", processes=args.processes,
                             runtime=args.runtime)
            try:
                progress(f"{mode}: open-loop client, {repeats} × {window_s:.0f} s at 100 requests/s, then steps {steps} ...")
                results[mode] = _measure(server.port, requests_file, key, repeats=repeats, window_s=window_s,
                                         steps=steps, step_s=step_s, client=openloop, server_pid=server.proc.pid)
                progress(f"{mode}: locust (the documented gRPC load test), {locust_repeats} × {window_s:.0f} s at 100 requests/s ...")
                results[f"{mode}_locust"] = _measure(server.port, requests_file, key, repeats=locust_repeats,
                                                     window_s=window_s, steps=[], step_s=step_s, client=_locust)
            finally:
                stats[mode] = server.stop()
            for tag in (mode, f"{mode}_locust"):
                progress(f"{tag}: p50 {results[tag]['p50_ms']:.2f} ms, p99 {results[tag]['p99_ms']:.2f} ms at 100 rps; "
                         f"max {results[tag]['max_rps_p99_under_50ms']} rps with p99 <= 50 ms")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)      # the world, the broker's log (~50 MB a run)
    rec, echo, st = results["recommend"], results["echo"], stats.get("recommend", {})
    n = max(st.get("requests", 0), 1)
    loc, loc_echo = results["recommend_locust"], results["echo_locust"]
    figures = {
        "p50_ms": round(rec["p50_ms"], 3), "p99_ms": round(rec["p99_ms"], 3),
        "max_rps_p99_under_50ms": rec["max_rps_p99_under_50ms"],
        "echo_p50_ms": round(echo["p50_ms"], 3), "echo_p99_ms": round(echo["p99_ms"], 3),
        "echo_max_rps_p99_under_50ms": echo["max_rps_p99_under_50ms"],
        "ratio_p50_to_echo": round(rec["p50_ms"] / echo["p50_ms"], 2),
        "ratio_p99_to_echo": round(rec["p99_ms"] / echo["p99_ms"], 2),
        "ratio_max_rps_to_echo": round(rec["max_rps_p99_under_50ms"] / max(echo["max_rps_p99_under_50ms"], 1e-9), 3),
        "server_cpu_ms_per_request": rec["server_cpu_ms_per_request"],
        "echo_server_cpu_ms_per_request": echo["server_cpu_ms_per_request"],
        "locust_p50_ms": round(loc["p50_ms"], 3), "locust_p99_ms": round(loc["p99_ms"], 3),
        "locust_echo_p50_ms": round(loc_echo["p50_ms"], 3), "locust_echo_p99_ms": round(loc_echo["p99_ms"], 3),
        "locust_ratio_p50_to_echo": round(loc["p50_ms"] / loc_echo["p50_ms"], 2),
        "goal_p99_under_20ms_at_100rps": rec["p99_ms"] <= 20.0,
        "goal_300rps_p99_under_50ms": rec["max_rps_p99_under_50ms"] >= 300,
        "machine_load_1min_at_start": load_at_start,
        "ad_candidates_per_request": round(st.get("ad_candidates", 0) / n, 1),
        "product_candidates_per_request": round(st.get("product_candidates", 0) / n, 1),
        "ads_per_reply": round(st.get("ads_served", 0) / n, 2),
        "suggestions_per_reply": round(st.get("suggestions_served", 0) / n, 2),
        "shed_expired": st.get("shed_expired", 0),
        "events_logged": (st.get("events") or {}).get("sent"),
        "event_log": "kafka" if bootstrap else "in-memory counter",
        "feature_store": "feast (sqlite online)" if not quick else "none (context-only)",
        "processes": args.processes, "runtime": args.runtime, "world": counts, "requests_in_mix": len(blobs),
        "ranker": args.ranker if args.ranker == "fallback" else f"{args.ranker} (registered as production)",
        "client": (("headline: Go open-loop client (bench/loadgen, .tools/sightline-loadgen)" if args.client == "go"
                    else "headline: Python grpcio futures open-loop client (--client python)")
                   + f" over {OPENLOOP_CHANNELS} connections, latency from the scheduled send time; "
                   "locust_*: locust's gevent gRPC user at 100 rps"),
        "recommend": rec, "echo": echo, "recommend_locust": loc, "echo_locust": loc_echo,
        "seconds": round(time.time() - started, 1),
    }
    emit("serve" if args.ranker == "fallback" else f"serve.{args.ranker}", figures, quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
