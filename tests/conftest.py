"""Shared fixtures: settings on a temporary data directory, one real Kafka broker per
test session, per-test topic namespaces, and an applied Feast repo.

Set SIGHTLINE_KAFKA_BOOTSTRAP to run the integration tests against an existing cluster
instead of the embedded broker. Package-specific fixtures live in
``tests/<ring>/<package>/conftest.py``.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
from pathlib import Path

import pytest

from sightline.settings import Settings, load_settings

log = logging.getLogger("tests")


def pytest_configure(config: pytest.Config) -> None:
    seed = int(os.environ.get("SIGHTLINE_TEST_SEED", "20261123"))
    random.seed(seed)
    config._sightline_seed = seed  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> str:
    return f"sightline test seed: {config._sightline_seed} (set SIGHTLINE_TEST_SEED to change)"  # type: ignore[attr-defined]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def make_settings(tmp_path: Path):
    """Build Settings on a temporary data directory, with explicit overrides."""

    def make(**overrides) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return load_settings(env={}, **overrides)

    return make


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real Apache Kafka broker for the whole test session (or the external one)."""
    external = os.environ.get("SIGHTLINE_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from sightline.stack import KafkaStackError, LocalKafka

    data_dir = tmp_path_factory.mktemp("kafka-session")
    settings = load_settings(env={}, data_dir=data_dir, kafka={"port": _free_port(), "heap_mb": 512})
    broker = LocalKafka(settings)
    try:
        bootstrap = broker.start()
    except KafkaStackError as exc:
        pytest.fail(f"could not start the test Kafka broker: {exc}\nRun 'make install' to fetch the Kafka jars.")
    yield bootstrap
    broker.stop()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with this test's own freshly created topics."""
    from sightline.stack import ensure_topics, project_topics

    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = load_settings(
        env={}, data_dir=tmp_path / "data",
        kafka={"bootstrap": kafka_bootstrap, "topic_prefix": prefix, "partitions": 2},
    )
    ensure_topics(kafka_bootstrap, project_topics(settings))
    return settings


@pytest.fixture
def feast_settings(tmp_path: Path, make_settings) -> Settings:
    """Settings whose Feast repo (SQLite online, parquet offline) is applied in tmp_path."""
    from features import apply_repo

    settings = make_settings()
    apply_repo(settings)
    return settings
