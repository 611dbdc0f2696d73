"""A small world shared by the simulation integration tests."""

import pytest

from simulation import WorldConfig, build_world


@pytest.fixture(scope="session")
def small_world():
    return build_world(WorldConfig(seed=11, n_users=1_000, n_products=2_000, n_advertisers=30, n_campaigns=80,
                                   n_creatives=240))
