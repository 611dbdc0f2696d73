"""Shared fixtures: settings on a temporary data directory, one real Kafka broker per
test session, per-test topic namespaces, and an applied Feast repo.

Set SIGHTLINE_KAFKA_BOOTSTRAP to run the integration tests against an existing cluster
instead of the embedded broker. Package-specific fixtures live in
``tests/<ring>/<package>/conftest.py``.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
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


# -- PostgreSQL (the prod campaign/experiment store), shared by every package's tests --------

def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in ["/usr/local/bin/" + name, *sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _run_as(user: str | None, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1:<free port> in a temp dir; yields a URL prefix
    ``postgresql+psycopg://postgres@127.0.0.1:<port>/`` (append a database name)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's 'postgresql' package "
                    "(apt-get install postgresql) or put them on PATH")
    user = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            try:
                pwd.getpwnam(candidate)
                user = candidate
                break
            except KeyError:
                continue
        if user is None or not shutil.which("runuser"):
            pytest.fail("running as root needs a non-root user for PostgreSQL; create one with "
                        "'useradd -r postgres' (and make sure 'runuser' exists)")
    home = Path(tempfile.mkdtemp(prefix="sightline-pg-"))
    data = home / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    res = _run_as(user, [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                  timeout=120)
    if res.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"initdb failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    port = _free_port()
    opts = f"-k {home} -p {port} -h 127.0.0.1 -F -c shared_buffers=16MB -c max_connections=50 -c fsync=off"
    res = _run_as(user, [pg_ctl, "-D", str(data), "-o", opts, "-l", str(home / "server.log"), "-w", "-t", "60",
                         "start"], timeout=90)
    if res.returncode != 0:
        log = (home / "server.log").read_text() if (home / "server.log").exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL (exit {res.returncode}):\n{res.stdout}\n{res.stderr}\n{log}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/"
    finally:
        _run_as(user, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _create_database(server_url: str) -> str:
    """A fresh, empty database on the server; returns its URL."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url + "postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url + name


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return _create_database(postgres_server)


# -- campaigns -------------------------------------------------------------------------------

def _campaign_doc(cid: str = "c1", advertiser_id: str = "acme", **over) -> dict:
    from datetime import datetime, timedelta, timezone

    doc = {
        "id": cid, "advertiser_id": advertiser_id, "name": f"Campaign {cid}", "objective": "traffic",
        "status": "active",
        "schedule": {"start": datetime.now(timezone.utc) - timedelta(days=1),
                     "end": datetime.now(timezone.utc) + timedelta(days=30)},
        "budget": {"daily": 100.0, "lifetime": 2000.0, "currency": "EUR"},
        "bid": {"strategy": "CPC", "amount": 0.8},
        "targeting": {"categories": ["sports/running_shoes"], "regions": ["DE"], "devices": ["glasses"]},
        "frequency_cap": {"per_day": 3, "per_week": 10},
        "creatives": [{"id": f"{cid}-cr1", "headline": "Run faster", "landing_url": "https://shop.example/run"}],
    }
    doc.update(over)
    return doc


@pytest.fixture
def campaign_doc():
    """``campaign_doc(cid, advertiser_id, **overrides)`` → a valid active campaign dict."""
    return _campaign_doc


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server (Debian package) on a free loopback port; ``host:port``."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed; run scripts/system_deps.sh (Debian package redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start within 10 s")
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)
