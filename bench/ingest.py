"""Ingestion benchmark: throughput and freshness through the real pipeline.

``python -m bench.ingest [--quick] [--no-intents]``

1. Throughput: N context events (20,000 users) pre-produced to a 4-partition topic,
   then one in-process ``IngestWorker`` consumes them through decode → validation →
   consent → de-duplication state → polars windows → Feast online (SQLite) + offline
   parquet. Clock: first assignment → last batch written. Median of repeats, each on
   fresh topics and a fresh data directory. Baseline in the same run: the same worker
   writing online through ``FeatureStore.write_to_online_store``.
2. Freshness: a worker process consumes while this process produces at 2,000 events/s
   with ``event_time`` = send time; the worker records (online write committed −
   event time) per event. p50/p99 over all events.
3. Intent text → categories: the lexicon matcher vs the MiniLM encoder on labelled
   synthetic intents — accuracy and latency per sentence.
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import sqlite3
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from bench._common import emit, median, progress

USERS = 20_000


def _settings(root: Path, bootstrap: str, **streaming):
    from sightline.settings import load_settings

    prefix = f"b{uuid.uuid4().hex[:8]}"
    data = root / prefix
    return load_settings(env={}, data_dir=data, kafka={"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 4},
                         streaming={"group_id": f"bench-{prefix}", "flush_interval_s": 5.0, "poll_timeout_ms": 50,
                                    "session_timeout_ms": 6000, **streaming})


def _prepare(settings) -> None:
    from features import apply_repo
    from sightline.stack import ensure_topics, project_topics

    ensure_topics(settings.kafka.bootstrap, project_topics(settings))
    apply_repo(settings)


def _payloads(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    from streaming import encode_event
    from streaming._synthetic import SyntheticEvents

    sim = SyntheticEvents(seed=seed, users=USERS, consent_mix=(0.7, 0.2, 0.1))
    out = []
    for _ in range(n):
        key, value, _ = encode_event(sim.context())
        out.append((key, value))
    return out


def _produce(settings, payloads) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, linger_ms=20, batch_size=256 * 1024, acks=1)
    topic = settings.topic("context")
    for key, value in payloads:
        producer.send(topic, key=key, value=value)
    producer.flush(120)
    producer.close()


def throughput(root: Path, bootstrap: str, n: int, online_mode: str, seed: int) -> float:
    from streaming import IngestWorker

    settings = _settings(root, bootstrap, max_poll_records=10_000)
    _prepare(settings)
    _produce(settings, _payloads(n, seed))
    worker = IngestWorker(settings, "0", online_mode=online_mode)
    seen = {"n": 0, "last": None}

    def on_batch(result):
        seen["n"] += sum(v for k, v in result.counts.items() if k.startswith("in."))
        seen["last"] = time.monotonic()

    worker.run(threading.Event(), max_idle_s=1.0, on_batch=on_batch)
    if seen["n"] < n:
        raise RuntimeError(f"worker consumed {seen['n']} of {n} events")
    elapsed = seen["last"] - worker._assigned_at
    rate = n / elapsed
    progress(f"throughput ({online_mode} online writes): {n} events in {elapsed:.2f} s = {rate:,.0f}/s")
    return rate


def freshness(root: Path, bootstrap: str, rate: int, seconds: float) -> dict:
    from streaming import encode_event, state_path
    from streaming._supervisor import worker_main
    from streaming._synthetic import SyntheticEvents
    from kafka import KafkaProducer

    settings = _settings(root, bootstrap, max_poll_records=2_000, flush_interval_s=2.0)
    _prepare(settings)
    proc = multiprocessing.get_context("spawn").Process(target=worker_main, args=(settings, "0"))
    proc.start()
    try:
        deadline = time.monotonic() + 120     # imports + group join: wait for the worker's first commit
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                with sqlite3.connect(state_path(settings.data_dir)) as db:
                    if db.execute("SELECT 1 FROM counters WHERE worker = '0'").fetchone():
                        break
            except sqlite3.Error:
                pass
        time.sleep(1)
        sim = SyntheticEvents(seed=5, users=USERS)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=2, acks=1)
        topic = settings.topic("context")
        tick = 0.02
        per_tick = max(1, int(rate * tick))
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            for _ in range(per_tick):
                key, value, headers = encode_event(sim.context())
                producer.send(topic, key=key, value=value, headers=headers)
            sent += per_tick
            producer.flush()
            next_tick = start + (sent / per_tick) * tick
            time.sleep(max(0.0, next_tick - time.monotonic()))
        achieved = sent / (time.monotonic() - start)
        producer.close()
        time.sleep(3)
    finally:
        proc.terminate()
        proc.join(60)
    with sqlite3.connect(state_path(settings.data_dir)) as db:
        c = dict(db.execute("SELECT name, value FROM counters WHERE worker = '0'").fetchall())
    progress(f"freshness at {achieved:,.0f} events/s: p50 {c.get('freshness_p50_s', float('nan')):.3f} s, "
             f"p99 {c.get('freshness_p99_s', float('nan')):.3f} s ({int(c.get('stored', 0))} stored)")
    return {"freshness_p50_s": c.get("freshness_p50_s"), "freshness_p99_s": c.get("freshness_p99_s"),
            "freshness_rate_achieved": achieved}


# Hand-labelled paraphrases that do not spell out the leaf name: the harder case.
PARAPHRASES = [
    ("I want new trainers for jogging", "sports/running_shoes"), ("something to make espresso at home", "kitchen/coffee_makers"),
    ("need a bag for my flight next week", "travel/luggage"), ("where can I get a cheap phone", "electronics/smartphones"),
    ("noise cancelling earbuds", "electronics/headphones"), ("a present for my dog", "pets/pet_toys"),
    ("food for my kitten", "pets/cat_food"), ("a bottle of merlot for dinner", "wine_spirits/red_wine"),
    ("fresh sourdough loaf", "grocery/bakery"), ("moisturiser for dry skin", "beauty/skincare"),
    ("a mat for my morning stretches", "sports/yoga"), ("a new road bike", "sports/cycling"),
    ("something to watch football on at home", "electronics/tv"), ("comfy couch for the living room", "home/furniture"),
    ("a good thriller novel", "books_media/fiction"), ("tickets for a gig tonight", "entertainment/concerts"),
    ("nappies for the baby", "baby/diapers"), ("a cordless drill", "diy/power_tools"),
    ("lipstick in a bold red", "beauty/makeup"), ("a smartwatch to track my runs", "electronics/smartwatches"),
    ("a pizza delivered now", "food_delivery/pizza"), ("winter tyres for my car", "auto/tires"),
    ("a tent for camping in the mountains", "sports/outdoor_hiking"), ("a frying pan that does not stick", "kitchen/cookware"),
    ("a lamp for my desk", "home/lighting"), ("a birthday board game for friends", "toys_games/board_games"),
    ("sushi for lunch", "food_delivery/sushi"), ("a printer for the home office", "office/printers"),
    ("protein powder after the gym", "sports/sports_nutrition"), ("a hotel room in Berlin tonight", "travel/hotels"),
]


def _accuracy(matcher, labelled) -> float:
    hits = matcher.match_many([t for t, _ in labelled])
    return sum(truth in h.categories[:1] for h, (_, truth) in zip(hits, labelled)) / len(labelled)


def intents(n: int) -> dict:
    from streaming import EncoderMatcher, LexiconMatcher
    from streaming._synthetic import SyntheticEvents

    labelled = SyntheticEvents(seed=9).labelled_intents(n)
    texts = [t for t, _ in labelled]
    out = {}
    lex = LexiconMatcher()
    t = time.perf_counter()
    hits = [lex.match(x) for x in texts]
    out["intent_lexicon_us_per_sentence"] = (time.perf_counter() - t) / n * 1e6
    out["intent_lexicon_accuracy"] = sum(truth in h.categories[:1] for h, (_, truth) in zip(hits, labelled)) / n
    t = time.perf_counter()
    enc = EncoderMatcher()
    out["intent_encoder_load_s"] = time.perf_counter() - t
    single = []
    for x in texts[:50]:
        t = time.perf_counter()
        enc._model.encode([x], normalize_embeddings=True)
        single.append(time.perf_counter() - t)
    out["intent_encoder_ms_per_sentence_single"] = statistics.median(single) * 1000
    t = time.perf_counter()
    hits = enc.match_many(texts)
    out["intent_encoder_ms_per_sentence_batched"] = (time.perf_counter() - t) / n * 1000
    out["intent_encoder_accuracy"] = sum(truth in h.categories[:1] for h, (_, truth) in zip(hits, labelled)) / n
    out["intent_lexicon_accuracy_paraphrases"] = _accuracy(lex, PARAPHRASES)
    out["intent_encoder_accuracy_paraphrases"] = _accuracy(enc, PARAPHRASES)
    progress("intents: " + ", ".join(f"{k}={v:.4g}" for k, v in out.items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--no-intents", action="store_true", help="skip the intent matcher comparison")
    args = parser.parse_args()
    n, repeats, fresh_s, n_intents = (20_000, 1, 8.0, 200) if args.quick else (100_000, 3, 30.0, 1000)

    from sightline.settings import load_settings
    from sightline.stack import LocalKafka

    root = Path(tempfile.mkdtemp(prefix="sightline-bench-ingest-"))
    env_settings = load_settings()
    broker = None
    bootstrap = env_settings.kafka.bootstrap
    if not bootstrap:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        broker = LocalKafka(load_settings(env={}, data_dir=root / "kafka", kafka={"port": port, "heap_mb": 512}))
        progress("starting a local Kafka broker ...")
        bootstrap = broker.start()
    try:
        rates = [throughput(root, bootstrap, n, "direct", seed=i) for i in range(repeats)]
        baseline = throughput(root, bootstrap, n // 2 if not args.quick else n // 4, "feast", seed=99)
        figures = {"events_per_s": median(rates), "events_per_s_runs": rates, "events": n, "users": USERS,
                   "baseline_write_to_online_store_events_per_s": baseline,
                   "speedup_vs_write_to_online_store": median(rates) / baseline}
        figures.update(freshness(root, bootstrap, 2000, fresh_s))
        figures["freshness_rate_target"] = 2000
        if not args.no_intents:
            figures.update(intents(n_intents))
    finally:
        if broker is not None:
            broker.stop()
    emit("ingest", figures, args.quick)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
