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


def test_redis_rate_limits_hold_across_servers_refill_and_survive_an_outage(redis_url):
    """Profile prod: one token bucket per key in Redis for every server behind the balancer."""
    import time

    from serving import RedisRateLimiter

    a, b = RedisRateLimiter(redis_url, 1, 1, prefix="t"), RedisRateLimiter(redis_url, 1, 1, prefix="t")  # two servers
    try:
        got = [lim.allow("k", 0.0, rate=10, burst=3)[0] for lim in (a, b, a, b, a)]
        assert got == [True, True, True, False, False], "the burst of 3 is the fleet's, not 3 per server"
        ok, retry = b.allow("k", 0.0, rate=10, burst=3)
        assert not ok and 0 < retry <= 0.1 + 1e-6
        time.sleep(0.25)                                   # 10 a second: two tokens back
        assert [a.allow("k", 0.0, rate=10, burst=3)[0] for _ in range(3)] == [True, True, False]
        assert a.allow("other", 0.0)[0] and not b.allow("other", 0.0)[0], "default limit: burst 1"
    finally:
        a.close()
        b.close()
    down = RedisRateLimiter("127.0.0.1:1", 1, 2, prefix="t", fallback_share=0.5)
    started = time.monotonic()
    assert down.allow("k", 0.0)[0] and not down.allow("k", 0.0)[0], "in the process at 1/2 of the burst of 2"
    assert time.monotonic() - started < 1.0, "a request must not wait on a limiter that is down"
    assert down.failures == 1, "the breaker skips redis after a failure"
    down.close()


def test_prod_profile_limits_keys_in_redis_and_local_in_the_process(make_settings, redis_url):
    from serving.errors import ServerConfigError

    assert make_settings(feast={"online_store": "redis", "redis_url": redis_url}).rate_limit_store_kind == "redis"
    assert make_settings().rate_limit_store_kind == "memory"
    assert make_settings(serving={"rate_limit_file": "/tmp/x"}).rate_limit_store_kind == "file"
    assert make_settings(feast={"online_store": "redis", "redis_url": redis_url},
                         serving={"rate_limit_store": "memory"}).rate_limit_store_kind == "memory"
    from serving import ApiKeyStore, build_server

    s = make_settings(serving={"port": 0, "rate_limit_store": "file"})
    keys = ApiKeyStore.from_settings(s)
    try:
        with pytest.raises(ServerConfigError, match="needs serving.rate_limit_file"):
            build_server(s, [], keys)
    finally:
        keys.close()
