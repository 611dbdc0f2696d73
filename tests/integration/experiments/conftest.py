"""Experiment fixtures: a throwaway real PostgreSQL server (the prod campaign DB) and Chromium.

PostgreSQL comes from the machine's binaries (initdb, pg_ctl on PATH, /usr/local/bin or
/usr/lib/postgresql/*/bin); as root the server runs as ``postgres``/``nobody`` via runuser.
Missing pieces FAIL with the command that installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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
def experiments_postgres():
    """URL prefix ``postgresql+psycopg://postgres@127.0.0.1:<port>/`` of a fresh server."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install -y postgresql")
    user = None
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or not shutil.which("runuser"):
            pytest.fail("as root PostgreSQL needs a non-root user: useradd -r postgres")
    home = Path(tempfile.mkdtemp(prefix="sightline-exp-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    data = home / "data"
    res = _run_as(user, [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                  timeout=120)
    if res.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"initdb failed: {res.stdout}\n{res.stderr}")
    port = _free_port()
    opts = f"-k {home} -p {port} -h 127.0.0.1 -F -c shared_buffers=16MB -c max_connections=20 -c fsync=off"
    res = _run_as(user, [pg_ctl, "-D", str(data), "-o", opts, "-l", str(home / "server.log"), "-w", "-t", "60",
                         "start"], timeout=90)
    if res.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {res.stdout}\n{res.stderr}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/"
    finally:
        _run_as(user, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def postgres_url(experiments_postgres: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import sqlalchemy as sa

    name = f"exp_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(experiments_postgres + "postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return experiments_postgres + name


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the headless Chromium binary."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("chromium is not installed; run: apt-get install -y chromium (scripts/system_deps.sh installs it)")


@pytest.fixture
def screenshot(chromium: str, tmp_path: Path):
    """``screenshot(page, png)`` renders an HTML file with headless Chromium at 1280x2000."""

    def shoot(page: Path, png: Path) -> subprocess.CompletedProcess:
        return _screenshot(chromium, page, png, tmp_path)

    return shoot


def _screenshot(chromium: str, page: Path, png: Path, tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1280,2000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
