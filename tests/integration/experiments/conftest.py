"""Experiment fixtures: headless Chromium (the PostgreSQL fixtures live in tests/conftest.py).

PostgreSQL comes from the machine's binaries (initdb, pg_ctl on PATH, /usr/local/bin or
/usr/lib/postgresql/*/bin); as root the server runs as ``postgres``/``nobody`` via runuser.
Missing pieces FAIL with the command that installs them.
"""

from __future__ import annotations

import os
import subprocess
import shutil
from pathlib import Path

import pytest


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
