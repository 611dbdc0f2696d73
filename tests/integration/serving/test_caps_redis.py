"""Frequency caps on the prod-profile store: a real Redis (Debian's redis-server)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_redis_store_counts_shares_prunes_and_erases(redis_url):
    import redis

    from serving import RedisFrequencyStore

    a, b = RedisFrequencyStore(redis_url, prefix="t"), RedisFrequencyStore(redis_url, prefix="t")  # two servers
    a.record_many("u", ["c", "c", "d"], 10)
    assert b.counts("u", "c", 10) == (2, 2)
    assert b.allowed_many("u", [("c", 2, None), ("d", 2, None), ("e", 1, 1)], 10) == [False, True, True]
    b.record_many("u", ["c"], 14)
    assert a.counts("u", "c", 14) == (1, 3) and not a.allowed_many("u", [("c", None, 3)], 14)[0]
    assert a.allowed_many("u", [("c", None, 3)], 17) == [True]     # day 10 left the rolling week
    client = redis.Redis(*redis_url.split(":"))
    assert not any(f.endswith(b"\x1f10") for f in client.hkeys("t:freq:u")), "stale days are dropped on read"
    assert 0 < client.ttl("t:freq:u") <= 8 * 86400, "an idle user's counts expire by themselves"
    a.record_many("bystander", ["c"], 14)
    assert a.users() == 2
    # only c of day 14 is left (d and c of day 10 were dropped as stale)
    assert b.erase_user("u") == 1 and a.counts("u", "c", 14) == (0, 0) and client.exists("t:freq:u") == 0
    assert a.counts("bystander", "c", 14) == (1, 1)
    client.close(), a.close(), b.close()


def test_redis_down_raises_unavailable_naming_the_store():
    from serving import RedisFrequencyStore
    from serving.errors import Unavailable

    import time

    store = RedisFrequencyStore("127.0.0.1:1", prefix="t")
    started = time.monotonic()
    with pytest.raises(Unavailable, match="redis 127.0.0.1:1"):
        store.allowed_many("u", [("c", 1, None)], 1)
    with pytest.raises(Unavailable, match="is down"):     # the breaker: no second connection attempt
        store.record_many("u", ["c"], 1)
    assert time.monotonic() - started < 3.0, "a request must not wait out redis-py's retry backoff (~10 s)"
    assert store.allowed_many("u", [("c", None, None)], 1) == [True], "no cap, no read"
    store.close()


def test_prod_profile_defaults_to_redis_and_privacy_erases_there(make_settings, redis_url):
    from privacy import erase_user, pseudonymize
    from serving import frequency_store

    s = make_settings(feast={"online_store": "redis", "redis_url": redis_url})
    assert s.frequency_store_kind == "redis"
    store = frequency_store(s)
    victim = pseudonymize("app-user-v", s.privacy.hmac_key)
    store.record_many(victim, ["c1", "c2"], 20)
    receipt = erase_user(s, "app-user-v")
    assert receipt.deleted("serving_frequency_caps") == 2, receipt.stores
    assert store.counts(victim, "c1", 20) == (0, 0)
    store.close()
