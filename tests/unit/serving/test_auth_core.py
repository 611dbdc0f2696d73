"""Token buckets and the hashed API-key store (SQLite file in tmp; no server)."""

import pytest

from serving import SCOPES, ApiKeyStore, RateLimiter, TokenBucket, key_id_of
from serving.errors import InvalidRequest, Unauthenticated


def test_token_bucket_allows_burst_then_refills_at_rate():
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.retry_after() == pytest.approx(0.1)
    assert bucket.take(0.1) is True          # one token back after 1/rate seconds
    assert bucket.take(0.1) is False
    assert bucket.take(100.0) and bucket.tokens == pytest.approx(2)   # capped at burst


def test_rate_limiter_keeps_one_bucket_per_key_and_honours_own_limits():
    limiter = RateLimiter(default_rate=1, default_burst=1)
    assert limiter.allow("a", 0.0)[0] and not limiter.allow("a", 0.0)[0]
    assert limiter.allow("b", 0.0)[0]
    assert all(limiter.allow("c", 0.0, rate=5, burst=5)[0] for _ in range(5))
    ok, retry = limiter.allow("c", 0.0)
    assert not ok and retry == pytest.approx(0.2)


@pytest.fixture
def store(tmp_path):
    now = [0.0]
    s = ApiKeyStore(f"sqlite:///{tmp_path}/keys.db", cache_s=5, clock=lambda: now[0])
    s.now = now
    yield s
    s.close()


def test_key_is_stored_hashed_and_verifies(store, tmp_path):
    plaintext = store.create_key("app-glasses", ["recommend", "feedback"])
    key = store.verify(plaintext)
    assert key.owner == "app-glasses" and key.scopes == {"recommend", "feedback"}
    assert key.key_id == key_id_of(plaintext)
    assert plaintext.encode() not in (tmp_path / "keys.db").read_bytes()
    assert [k.key_id for k in store.list_keys()] == [key.key_id]


@pytest.mark.parametrize("bad", [None, "", "nonsense", "slk_abc_def", "slk__x"])
def test_unknown_or_missing_keys_are_unauthenticated(store, bad):
    store.create_key("app", ["recommend"])
    with pytest.raises(Unauthenticated):
        store.verify(bad)


def test_wrong_secret_for_a_real_key_id_is_refused(store):
    plaintext = store.create_key("app", ["recommend"])
    with pytest.raises(Unauthenticated):
        store.verify(plaintext[:-2] + "xx")


def test_revocation_is_immediate_on_the_same_store(store):
    plaintext = store.create_key("app", ["recommend"])
    key = store.verify(plaintext)          # cached now
    revoked = store.revoke(key.key_id)
    assert not revoked.active
    with pytest.raises(Unauthenticated, match="revoked"):
        store.verify(plaintext)
    assert store.list_keys() == [] and len(store.list_keys(include_revoked=True)) == 1


def test_revocation_reaches_other_stores_after_the_cache_window(store, tmp_path):
    plaintext = store.create_key("app", ["recommend"])
    now = [0.0]
    other = ApiKeyStore(f"sqlite:///{tmp_path}/keys.db", cache_s=5, clock=lambda: now[0])
    other.verify(plaintext)
    store.revoke(key_id_of(plaintext))
    other.verify(plaintext)                # still cached
    now[0] = 6.0
    with pytest.raises(Unauthenticated):
        other.verify(plaintext)
    other.close()


def test_unknown_scope_and_empty_owner_are_refused(store):
    with pytest.raises(InvalidRequest, match="admin:campaigns"):
        store.create_key("m", ["admin"])
    with pytest.raises(InvalidRequest):
        store.create_key("  ", ["recommend"])
    assert set(SCOPES) == {"recommend", "feedback", "admin:campaigns", "admin:experiments", "admin:privacy"}
