"""Small worlds for fast simulation tests (sizes scaled down ~10x from the defaults)."""

import pytest

from simulation import WorldConfig, build_world

SMALL = dict(n_users=2_000, n_products=3_000, n_advertisers=40, n_campaigns=120, n_creatives=360)


@pytest.fixture(scope="session")
def small_config() -> WorldConfig:
    return WorldConfig(seed=11, **SMALL)


@pytest.fixture(scope="session")
def small_world(small_config):
    return build_world(small_config)


@pytest.fixture(scope="session")
def default_world():
    """The default-size world (about a second to build); shared by the whole session."""
    return build_world(WorldConfig())
