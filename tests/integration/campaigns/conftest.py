"""Campaign store fixtures: a throwaway real PostgreSQL server per session, and a
``store_url`` fixture parametrized over SQLite and PostgreSQL so the same store tests
run against both.

PostgreSQL comes from the machine's binaries (``initdb``, ``pg_ctl``, ``postgres`` on
PATH or in /usr/local/bin, /usr/lib/postgresql/*/bin). As root, the server runs as the
``postgres`` (or ``nobody``) user via ``runuser``. If that is impossible, the tests FAIL
with a message naming what to install.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    """A fresh, empty campaign database URL on SQLite and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'campaigns.db'}"
    return request.getfixturevalue("postgres_url")


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
