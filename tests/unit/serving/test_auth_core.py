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


def test_shared_buckets_hold_one_limit_for_every_process(tmp_path):
    from serving import SharedRateLimiter, create_bucket_file

    path = create_bucket_file(tmp_path / "buckets")
    a, b = SharedRateLimiter(path, 1, 1), SharedRateLimiter(path, 1, 1)     # two processes' views
    try:
        got = [lim.allow("k", 0.0, rate=2, burst=5)[0] for lim in (a, b, a, b, a, b, a)]
        assert got == [True] * 5 + [False] * 2, "the burst of 5 is the machine's, not 5 per process"
        ok, retry = b.allow("k", 0.0, rate=2, burst=5)
        assert not ok and retry == pytest.approx(0.5)
        assert a.allow("k", 0.5, rate=2, burst=5)[0] and not b.allow("k", 0.5, rate=2, burst=5)[0]
        assert b.allow("other", 0.5)[0] and not a.allow("other", 0.5)[0], "default limit: burst 1"
    finally:
        a.close()
        b.close()


def _hammer(path, n, burst, go, out):
    from serving import SharedRateLimiter

    limiter = SharedRateLimiter(path, 1, 1)
    go.wait(30)
    out.put(sum(limiter.allow("hot", 0.0, rate=1, burst=burst)[0] for _ in range(n)))


def test_shared_buckets_lose_no_update_when_processes_race(tmp_path):
    """Two processes spending one bucket at once: exactly its burst is granted (no lost write)."""
    import multiprocessing

    from serving import create_bucket_file

    path = create_bucket_file(tmp_path / "buckets")
    ctx = multiprocessing.get_context("fork")
    out, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(path, 20_000, 20_000, go, out)) for _ in range(2)]
    for p in procs:
        p.start()
    go.set()                       # both start together: ~50 ms of calls each, interleaved
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(granted) == 20_000, f"granted {granted} of a burst of 20,000"
    assert all(g > 0 for g in granted), f"both processes took part: {granted}"


def test_a_full_bucket_file_falls_back_to_a_share_and_a_bad_file_names_the_fix(tmp_path):
    from serving import SharedRateLimiter, create_bucket_file

    limiter = SharedRateLimiter(create_bucket_file(tmp_path / "small", slots=2), 1, 4, fallback_share=0.5)
    try:
        keys = [f"key-{i}" for i in range(6)]
        firsts = [sum(limiter.allow(k, 0.0)[0] for _ in range(10)) for k in keys]
        assert sorted(firsts) == [2, 2, 2, 2, 4, 4], "two keys in the file (burst 4), the rest at half"
    finally:
        limiter.close()
    (tmp_path / "junk").write_bytes(b"not buckets")
    with pytest.raises(ValueError, match="create_bucket_file"):
        SharedRateLimiter(tmp_path / "junk", 1, 1)


def test_a_configured_bucket_file_is_created_once_and_then_shared(tmp_path):
    """Servers started apart that name one file: the first creates it, the next ones join it."""
    from serving import SharedRateLimiter, create_bucket_file

    path = create_bucket_file(tmp_path / "shared", exist_ok=True)
    first = SharedRateLimiter(path, 1, 2)
    try:
        assert first.allow("k", 0.0)[0] and first.allow("k", 0.0)[0]
        second = SharedRateLimiter(create_bucket_file(path, exist_ok=True), 1, 2)    # must not reset it
        try:
            assert not second.allow("k", 0.0)[0], "joining the file emptied the buckets in use"
        finally:
            second.close()
    finally:
        first.close()


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
