"""A small, hand-made campaign world for serving tests, and a running server on 127.0.0.1."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest

from sightline.settings import load_settings

NOW = datetime.now(timezone.utc)


def _campaign(cid, adv, *, bid=1.0, strategy="CPC", daily=500.0, targeting=None, cap=None, creatives=1,
              sku=None, excluded=(), dayparting=()):
    from campaigns import Campaign

    return Campaign.from_doc({
        "id": cid, "advertiser_id": adv, "name": cid, "status": "active",
        "schedule": {"start": (NOW - timedelta(days=1)).isoformat(), "end": (NOW + timedelta(days=30)).isoformat(),
                     "dayparting": list(dayparting)},
        "budget": {"daily": daily, "currency": "EUR"},
        "bid": {"strategy": strategy, "amount": bid},
        "targeting": targeting or {},
        "frequency_cap": cap or {},
        "excluded_categories": list(excluded),
        "creatives": [{"id": f"{cid}-cr{i}", "headline": f"{cid} ad {i}", "landing_url": f"https://example.com/{cid}",
                       "product_sku": sku} for i in range(creatives)],
    })


def seed_world(db_url: str) -> None:
    from campaigns import Advertiser, CampaignStore, Product

    store = CampaignStore.open(db_url)
    advertisers = [Advertiser(id=a, name=a.title(), currency="EUR")
                   for a in ("shoeco", "runfast", "coffeeco", "techco", "nightco", "tinyco", "safeco")]
    products = [
        Product(sku=f"shoe-{i}", title=f"{brand} Trail running shoes {i}", brand=brand, category="sports/running_shoes",
                price=60.0 + 20 * i, landing_url=f"https://shop.example.com/shoe-{i}", quality=0.8, advertiser_id="shoeco")
        for i, brand in enumerate(["Velora", "Velora", "Velora", "Norix", "Astium", "Lumex"])
    ] + [
        Product(sku=f"coffee-{i}", title=f"Espresso coffee beans {i}", brand="Bean", category="grocery/coffee",
                price=9.0, landing_url=f"https://shop.example.com/coffee-{i}") for i in range(3)
    ] + [
        Product(sku="hp-1", title="Noise cancelling headphones", brand="Techy", category="electronics/headphones",
                price=199.0, landing_url="https://shop.example.com/hp-1"),
    ]
    campaigns = [
        _campaign("c-shoes", "shoeco", bid=1.0, targeting={"categories": ["sports/running_shoes"]}, creatives=2,
                  sku="shoe-0", cap={"per_day": 1}),
        _campaign("c-shoes-2", "shoeco", bid=0.9, targeting={"categories": ["sports"]}, sku="shoe-1"),
        _campaign("c-runfast", "runfast", bid=0.8, targeting={"keywords": ["running"]}, sku="shoe-3"),
        _campaign("c-coffee", "coffeeco", bid=20.0, strategy="CPM", targeting={"scenes": ["cafe"]}, sku="coffee-0"),
        _campaign("c-glasses", "techco", bid=1.5, targeting={"devices": ["glasses"], "keywords": ["headphones"]},
                  sku="hp-1"),
        _campaign("c-night", "nightco", bid=2.0, dayparting=[{"start_hour": 22, "end_hour": 24}],
                  targeting={"categories": ["sports/running_shoes"]}),
        _campaign("c-tiny", "tinyco", bid=30.0, strategy="CPM", daily=0.2, targeting={"scenes": ["gym"]}),
        _campaign("c-safe", "safeco", bid=0.5, excluded=["health"], targeting={"categories": ["sports"]}),
    ]
    store.bulk_load(advertisers=advertisers, campaigns=campaigns, products=products, actor="test")
    store.close()


@dataclass
class Running:
    settings: object
    server: object
    channel: grpc.Channel
    stub: object
    servicer: object
    events: object
    key: str

    def recommend(self, request, **kw):
        return self.stub.Recommend(request, metadata=[("x-api-key", self.key)], timeout=kw.pop("timeout", 10), **kw)

    def feedback(self, request):
        return self.stub.ReportFeedback(request, metadata=[("x-api-key", self.key)], timeout=10)


def start_server(settings, **service_kw) -> Running:
    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, MemoryEventLog, build_server, recommendation_service

    events = service_kw.pop("events", None) or MemoryEventLog()
    service = recommendation_service(settings, events=events, seed=7, **service_kw)
    keys = ApiKeyStore.from_settings(settings)
    key = keys.create_key("test-app", ["recommend", "feedback"])
    server = build_server(settings, [service], keys, port=0).start()
    channel = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(channel).result(timeout=10)
    return Running(settings, server, channel, serving_pb2_grpc.RecommendationServiceStub(channel),
                   service.servicer, events, key)


def stop_server(running: Running) -> None:
    running.channel.close()
    running.server.stop(1)
    if running.server.api_keys is not None:
        running.server.api_keys.close()


@pytest.fixture(scope="module")
def serving_settings(tmp_path_factory):
    """Settings with a seeded campaign DB and an applied Feast repo (one per test module)."""
    from features import apply_repo

    data = Path(tmp_path_factory.mktemp("serving")) / "data"
    settings = load_settings(env={}, data_dir=data, serving={"port": 0, "feature_refresh_s": 0.5,
                                                             "snapshot_refresh_s": 0.5})
    seed_world(settings.campaign_db_url)
    apply_repo(settings)
    return settings


@pytest.fixture(scope="module")
def running(serving_settings):
    r = start_server(serving_settings, use_experiments=True)
    yield r
    stop_server(r)


def start_cli_server(kafka_settings, args: list[str], pattern: str, timeout_s: float = 120.0):
    """``python -m sightline serve ARGS`` on the test broker and data dir; returns ``(proc, match)``
    once a stderr line matches ``pattern`` (fails naming the command otherwise)."""
    import os
    import re
    import subprocess
    import sys
    import time

    env = {**os.environ, "SIGHTLINE_DATA_DIR": str(kafka_settings.data_dir), "SIGHTLINE_SERVING_PORT": "0",
           "SIGHTLINE_KAFKA_BOOTSTRAP": kafka_settings.kafka.bootstrap,
           "SIGHTLINE_KAFKA_TOPIC_PREFIX": kafka_settings.kafka.topic_prefix}
    cmd = [sys.executable, "-m", "sightline", "serve", *args]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[3], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            pytest.fail(f"{' '.join(cmd[2:])} exited with {proc.returncode}")
        found = re.search(pattern, line)
        if found:
            return proc, found
    proc.kill()
    pytest.fail(f"{' '.join(cmd[2:])} printed no line matching {pattern!r} within {timeout_s:.0f} s")


@pytest.fixture(scope="session")
def serving_kit():
    """The helpers of this conftest for test modules (they are not importable as a package)."""
    from types import SimpleNamespace

    return SimpleNamespace(start_server=start_server, stop_server=stop_server, seed_world=seed_world,
                           start_cli_server=start_cli_server)
