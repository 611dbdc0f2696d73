"""Does a burst of bad messages slow the good ones? Ingestion and serving, clean vs 50 % bad.

Ingestion: streaming's real ``Pipeline`` (decode → validate → consent → SQLite state →
window features) with its real Kafka dead-letter producer on a local broker; the
feature sink is a null sink so the figure isolates what bad messages cost (Feast writes
are the same in both phases). Each repeat processes the same number of *good* context
events, either alone (clean) or interleaved one-to-one with bad ones (burst: random
bytes, oversize, wrong schema, missing fields, impossible times), in batches like the
worker's polls. Figure: good events per second, burst / clean.

Serving: a real gRPC server (``serving.recommendation_service``, campaign store with a
small catalog, no Feast) and a sequential client of good Recommend calls; in the burst
phase a second *process* sends the same number of bad calls (invalid fields, garbage
bodies, missing or wrong API keys) at the good client's clean rate. Figures: good-call
p50/p99 latency, burst / clean.

Stated bound (``within_bound``): under a 50 % bad burst, good ingestion throughput stays
≥ 0.5 × clean — i.e. a bad message costs the worker no more than a good one, which it
should since it is refused before any feature work — and good Recommend p99 stays
≤ 2.5 × clean (2 shared cores: the bad sender competes for CPU with the server, so some
slowdown is physics, not a defect). ``ingest_ratio_no_oversize`` repeats the burst
without oversize messages, to show what the dead-letter copies of big messages cost.

Usage: python -m bench.hostile [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import emit, median, progress

INGEST_MIN_RATIO = 0.5
SERVE_MAX_P99_RATIO = 2.5


# ------------------------------------------------------------------ ingestion
class _NullSink:
    def write_online(self, view, rows) -> None:
        pass

    def write_offline(self, view, rows) -> None:
        pass

    def delete_users(self, user_ids) -> None:
        pass


def _good_values(n: int, now_ms: int) -> list[bytes]:
    from proto import events_pb2 as ev

    rng = random.Random(n)
    scenes = ["gym", "cafe", "kitchen", "store_aisle", "street"]
    objects = ["running_shoe", "coffee_maker", "laptop", "sofa", "banana"]
    out = []
    for i in range(n):
        out.append(ev.ContextEvent(
            event_id=uuid.uuid4().hex, event_time_ms=now_ms - rng.randint(0, 60_000), user_id=f"u{rng.randint(0, 999)}",
            consent=ev.Consent(context=True, personalization=True, measurement=True), app_id="bench",
            context=ev.Context(device=ev.GLASSES, scene=rng.choice(scenes), objects=rng.sample(objects, 2),
                               intent_text="I need running shoes under 100 euros", location_category="retail",
                               region="DE-BE", local_hour=10, local_weekday=2)).SerializeToString())
    return out


BAD_KINDS = ("random_bytes", "oversize", "wrong_schema", "missing_fields", "invalid_values")


def _bad_values(n: int, now_ms: int, max_bytes: int, kinds=BAD_KINDS) -> list[tuple[bytes, list]]:
    from proto import events_pb2 as ev

    rng = random.Random(-n)
    out = []
    for i in range(n):
        k = BAD_KINDS.index(kinds[i % len(kinds)])
        if k == 0:
            value, headers = rng.randbytes(rng.randint(1, 512)), []
        elif k == 1:
            value, headers = b"\x0a" * (max_bytes + 1), []
        elif k == 2:
            value = ev.FeedbackEvent(event_id="x", event_time_ms=now_ms, user_id="u").SerializeToString()
            headers = [("schema", b"sightline.v1.FeedbackEvent")]
        elif k == 3:
            value, headers = ev.ContextEvent(event_time_ms=now_ms).SerializeToString(), []
        else:
            value = ev.ContextEvent(event_id="e", user_id="u", event_time_ms=5,
                                    context=ev.Context(local_hour=99)).SerializeToString()
            headers = []
        out.append((value, headers))
    return out


def _ingest_once(bootstrap: str, n_good: int, burst: bool, batch: int, kinds=BAD_KINDS) -> float:
    from kafka import KafkaProducer

    from streaming import KafkaDeadLetters, LexiconMatcher, Pipeline, Record, StateStore, state_path

    now_ms = int(time.time() * 1000)
    max_bytes = 64 * 1024
    topic = "benchhostile.context.v1"   # created (with its .dlq) by main()
    good = [(v, [("schema", b"sightline.v1.ContextEvent")]) for v in _good_values(n_good, now_ms)]
    records = []
    if burst:
        bad = _bad_values(n_good, now_ms, max_bytes, kinds)
        for g, b in zip(good, bad):
            records += [b, g]
    else:
        records = good
    recs = [Record(topic, 0, i, v, b"k", h) for i, (v, h) in enumerate(records)]
    with tempfile.TemporaryDirectory() as tmp:
        state = StateStore(state_path(Path(tmp)))
        producer = KafkaProducer(bootstrap_servers=bootstrap, **KafkaDeadLetters.PRODUCER_CONFIG)  # the worker's
        pipe = Pipeline(kinds_by_topic={topic: "context"}, state=state, sink=_NullSink(),
                        dead_letters=(dlq := KafkaDeadLetters(producer, "bench")), matcher=LexiconMatcher(),
                        data_dir=Path(tmp), max_message_bytes=max_bytes)
        start = time.perf_counter()
        stored = 0
        for i in range(0, len(recs), batch):
            stored += pipe.process(recs[i:i + batch]).counts["stored"]
        pipe.flush()
        dlq.flush()           # every DLQ copy delivered inside the timed section
        elapsed = time.perf_counter() - start
        producer.close()
        state.close()
    if stored != n_good:
        raise RuntimeError(f"expected {n_good} good events stored, got {stored}")
    return n_good / elapsed


def bench_ingest(bootstrap: str, quick: bool) -> dict:
    n, repeats, batch = (2_000, 3, 500) if quick else (10_000, 5, 1000)
    _ingest_once(bootstrap, 200, True, batch)  # warm-up (matcher caches, imports)
    small = tuple(k for k in BAD_KINDS if k != "oversize")
    clean, burst, burst_small = [], [], []
    for r in range(repeats):
        clean.append(_ingest_once(bootstrap, n, False, batch))
        burst.append(_ingest_once(bootstrap, n, True, batch))
        burst_small.append(_ingest_once(bootstrap, n, True, batch, small))
        progress(f"ingest repeat {r + 1}/{repeats}: clean {clean[-1]:,.0f}/s, burst {burst[-1]:,.0f} good/s, "
                 f"burst without oversize {burst_small[-1]:,.0f} good/s")
    c, b, bs = median(clean), median(burst), median(burst_small)
    return {"ingest_good_per_s_clean": round(c, 1), "ingest_good_per_s_burst": round(b, 1),
            "ingest_ratio": round(b / c, 3), "ingest_good_per_s_burst_no_oversize": round(bs, 1),
            "ingest_ratio_no_oversize": round(bs / c, 3), "ingest_good_events": n, "ingest_repeats": repeats}


# ------------------------------------------------------------------ serving
def _seed_catalog(settings) -> None:
    from datetime import datetime, timedelta, timezone

    from campaigns import Advertiser, Campaign, CampaignStore, Product

    now = datetime.now(timezone.utc)
    cats = ["sports/running_shoes", "kitchen/coffee_makers", "electronics/laptops", "home/furniture", "grocery/fresh_produce"]
    campaigns = [Campaign.from_doc({
        "id": f"c{i}", "advertiser_id": f"adv{i % 10}", "name": f"c{i}", "status": "active",
        "schedule": {"start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=30)).isoformat()},
        "budget": {"daily": 1e6, "currency": "EUR"}, "bid": {"strategy": "CPC", "amount": 0.5 + (i % 7) / 10},
        "targeting": {"categories": [cats[i % len(cats)]]},
        "creatives": [{"id": f"c{i}-cr", "headline": f"Ad {i}", "landing_url": f"https://example.com/{i}"}],
    }) for i in range(50)]
    products = [Product(sku=f"p{i}", title=f"Product {i}", brand=f"b{i % 20}", category=cats[i % len(cats)],
                        price=10.0 + i, landing_url=f"https://shop.example.com/p{i}", quality=0.7)
                for i in range(200)]
    store = CampaignStore.open(settings.campaign_db_url)
    store.bulk_load(advertisers=[Advertiser(id=f"adv{i}", name=f"Adv {i}", currency="EUR") for i in range(10)],
                    campaigns=campaigns, products=products, actor="bench")
    store.close()


def _good_request():
    from proto import events_pb2 as ev
    from proto import serving_pb2

    return serving_pb2.RecommendRequest(
        app_id="bench", user_id="u1", consent=ev.Consent(context=True, personalization=True, measurement=True),
        context=ev.Context(device=ev.GLASSES, scene="store_aisle", objects=["running_shoe"],
                           intent_text="I need running shoes", location_category="retail", region="DE-BE",
                           local_hour=10, local_weekday=2),
        surfaces=serving_pb2.Surfaces(ad_slots=3, suggestions=5))


def _bad_sender(address: str, key: str, good_done, stop, out, control: bool = False) -> None:
    """Child process: one bad Recommend call per good call completed (``good_done``), until ``stop``.

    ``control=True`` sends *good* calls instead: the same extra load without the badness,
    so ``serve_p99_ratio_vs_good_load`` isolates what being bad costs."""
    import grpc

    from proto import serving_pb2_grpc

    channel = grpc.insecure_channel(address)
    stub = serving_pb2_grpc.RecommendationServiceStub(channel)
    raw = channel.unary_unary("/sightline.v1.RecommendationService/Recommend")
    bad_field = _good_request()
    bad_field.surfaces.ad_slots = 99
    no_consent = _good_request()
    no_consent.consent.context = False
    huge = _good_request()
    huge.context.intent_text = "x" * 5000
    calls = [
        lambda: stub.Recommend(bad_field, metadata=[("x-api-key", key)], timeout=2),
        lambda: stub.Recommend(no_consent, metadata=[("x-api-key", key)], timeout=2),
        lambda: stub.Recommend(huge, metadata=[("x-api-key", key)], timeout=2),
        lambda: raw(b"\xff" * 64, metadata=[("x-api-key", key)], timeout=2),
        lambda: stub.Recommend(_good_request(), timeout=2),                                  # no key
        lambda: stub.Recommend(_good_request(), metadata=[("x-api-key", "slk_x_y")], timeout=2),  # wrong key
    ]
    if control:
        calls = [lambda: stub.Recommend(_good_request(), metadata=[("x-api-key", key)], timeout=2)]
    out.put("ready")
    sent = 0
    while not stop.is_set():
        if sent >= good_done.value + 1:
            time.sleep(0.0002)
            continue
        try:
            calls[sent % len(calls)]()
        except grpc.RpcError:
            pass
        sent += 1
    channel.close()
    out.put(sent)


def _good_phase(stub, md, seconds: float, counter=None) -> list[float]:
    lat = []
    end = time.perf_counter() + seconds
    req = _good_request()
    while time.perf_counter() < end:
        t = time.perf_counter()
        stub.Recommend(req, metadata=md, timeout=5)
        lat.append((time.perf_counter() - t) * 1000)
        if counter is not None:
            counter.value += 1
    return lat


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def bench_serve(quick: bool) -> dict:
    import grpc

    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, MemoryEventLog, build_server, recommendation_service
    from sightline.settings import load_settings

    seconds, repeats = (3.0, 2) if quick else (10.0, 5)
    tmp = tempfile.mkdtemp(prefix="bench-hostile-")
    s = load_settings(env={}, data_dir=Path(tmp) / "data",
                      serving={"port": 0, "rate_limit_rps": 100_000, "rate_limit_burst": 100_000,
                               "snapshot_refresh_s": 60})
    _seed_catalog(s)
    keys = ApiKeyStore.from_settings(s)
    key = keys.create_key("bench", ["recommend", "feedback"])
    server = build_server(s, [recommendation_service(s, events=MemoryEventLog(), feature_store=False,
                                                     use_experiments=False, seed=3)], keys).start()
    md = [("x-api-key", key)]
    channel = grpc.insecure_channel(server.address)
    stub = serving_pb2_grpc.RecommendationServiceStub(channel)
    _good_phase(stub, md, 1.0)  # warm-up
    ctx = mp.get_context("spawn")
    clean_p50, clean_p99, burst_p50, burst_p99, ctl_p50, ctl_p99, bad_sent, good_n = ([] for _ in range(8))

    def loaded(control: bool) -> tuple[list[float], int]:
        q, stop, counter = ctx.Queue(), ctx.Event(), ctx.Value("q", 0, lock=False)
        child = ctx.Process(target=_bad_sender, args=(server.address, key, counter, stop, q, control))
        child.start()
        q.get(timeout=60)  # the child imported grpc and built its calls
        lat = _good_phase(stub, md, seconds, counter)
        stop.set()
        sent = q.get(timeout=30)
        child.join(timeout=30)
        return lat, sent

    try:
        for r in range(repeats):
            lat = _good_phase(stub, md, seconds)
            clean_p50.append(_pct(lat, 0.5))
            clean_p99.append(_pct(lat, 0.99))
            lat_b, sent = loaded(False)
            burst_p50.append(_pct(lat_b, 0.5))
            burst_p99.append(_pct(lat_b, 0.99))
            bad_sent.append(sent)
            good_n.append(len(lat_b))
            lat_c, _ = loaded(True)
            ctl_p50.append(_pct(lat_c, 0.5))
            ctl_p99.append(_pct(lat_c, 0.99))
            progress(f"serve repeat {r + 1}/{repeats}: clean p50 {clean_p50[-1]:.2f} ms p99 {clean_p99[-1]:.2f} ms; "
                     f"bad burst p50 {burst_p50[-1]:.2f} ms p99 {burst_p99[-1]:.2f} ms ({sent} bad calls); "
                     f"same load of good calls p50 {ctl_p50[-1]:.2f} ms p99 {ctl_p99[-1]:.2f} ms")
    finally:
        channel.close()
        server.stop(0)
        keys.close()
    c50, c99, b50, b99 = median(clean_p50), median(clean_p99), median(burst_p50), median(burst_p99)
    g50, g99 = median(ctl_p50), median(ctl_p99)
    return {"serve_good_p50_ms_clean": round(c50, 3), "serve_good_p99_ms_clean": round(c99, 3),
            "serve_good_p50_ms_burst": round(b50, 3), "serve_good_p99_ms_burst": round(b99, 3),
            "serve_p50_ratio": round(b50 / c50, 3), "serve_p99_ratio": round(b99 / c99, 3),
            "serve_good_p50_ms_good_load": round(g50, 3), "serve_good_p99_ms_good_load": round(g99, 3),
            "serve_p99_ratio_vs_good_load": round(b99 / g99, 3),
            "serve_bad_calls_per_repeat": int(median(bad_sent)), "serve_good_calls_per_repeat_burst": int(median(good_n))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    args = parser.parse_args()
    from sightline.settings import load_settings
    from sightline.stack import LocalKafka

    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="bench-hostile-kafka-")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broker = LocalKafka(load_settings(env={}, data_dir=Path(tmp), kafka={"port": port, "heap_mb": 512}))
    progress("starting a local Kafka broker for the dead-letter producer")
    bootstrap = broker.start()
    from sightline.stack import ensure_topics, project_topics

    ensure_topics(bootstrap, project_topics(load_settings(env={}, kafka={"bootstrap": bootstrap,
                                                                       "topic_prefix": "benchhostile"})))
    try:
        ingest = bench_ingest(bootstrap, args.quick)
    finally:
        broker.stop()
    serve = bench_serve(args.quick)
    within = ingest["ingest_ratio"] >= INGEST_MIN_RATIO and serve["serve_p99_ratio"] <= SERVE_MAX_P99_RATIO
    figures = {
        "ingest_ratio": ingest["ingest_ratio"], "serve_p99_ratio": serve["serve_p99_ratio"],
        "within_bound": within,
        "serve_p99_ratio_vs_good_load": serve["serve_p99_ratio_vs_good_load"],
        "serve_good_p99_ms_clean": serve["serve_good_p99_ms_clean"],
        **ingest, **serve,
        "bound": {"ingest_ratio_min": INGEST_MIN_RATIO, "serve_p99_ratio_max": SERVE_MAX_P99_RATIO},
        "bad_share": 0.5, "seconds": round(time.perf_counter() - started, 1),
    }
    emit("hostile", figures, args.quick)


if __name__ == "__main__":
    main()
