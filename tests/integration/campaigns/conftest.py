"""Campaign store fixtures: a throwaway real PostgreSQL server per session, and a
``store_url`` fixture parametrized over SQLite and PostgreSQL so the same store tests
run against both.

PostgreSQL comes from the machine's binaries (``initdb``, ``pg_ctl``, ``postgres`` on
PATH or in /usr/local/bin, /usr/lib/postgresql/*/bin). As root, the server runs as the
``postgres`` (or ``nobody``) user via ``runuser``. If that is impossible, the tests FAIL
with a message naming what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url + "postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url + name


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """A fresh, empty campaign database URL on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'campaigns.db'}"
    return _create_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(store_url: str):
    from campaigns import CampaignStore

    s = CampaignStore.open(store_url, max_bid=50.0)
    yield s
    s.close()


@pytest.fixture
def wait_until():
    """Poll ``predicate`` until true or ``timeout`` s; returns the seconds it took."""

    def wait(predicate, timeout: float = 10.0, interval: float = 0.05) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(interval)
        raise AssertionError(f"condition not met within {timeout} s")

    return wait


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
