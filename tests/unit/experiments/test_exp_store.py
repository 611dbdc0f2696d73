"""The SQL store (SQLite file here; PostgreSQL in the integration ring) and the cache."""

from __future__ import annotations

import pytest

from experiments import (
    ExperimentCache,
    ExperimentExists,
    ExperimentImmutable,
    ExperimentNotFound,
    ExperimentStore,
    ExperimentStoreUnavailable,
    LayerConflict,
    parse_experiment,
)


def _exp(**kw):
    base = {"id": "e1", "layer": "l1", "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}
    base.update(kw)
    return parse_experiment(base)


@pytest.fixture
def store(make_settings):
    s = ExperimentStore.from_settings(make_settings())
    yield s
    s.close()


def test_lifecycle(store):
    created = store.create(_exp(description="first"))
    assert created.status == "draft" and created.created_at is not None
    with pytest.raises(ExperimentExists):
        store.create(_exp())
    running = store.start("e1")
    assert running.status == "running" and running.started_at is not None
    assert [e.id for e in store.list(status="running")] == ["e1"]
    stopped = store.stop("e1")
    assert stopped.status == "stopped"
    with pytest.raises(ExperimentImmutable, match="create a new experiment"):
        store.start("e1")
    with pytest.raises(ExperimentNotFound, match="does not exist"):
        store.get("nope")


def test_running_split_cannot_change(store):
    store.create(_exp())
    store.update(_exp(salt="new-salt"))  # drafts may change
    store.start("e1")
    store.update(_exp(salt="new-salt", description="only the text"))
    for change in ({"salt": "other"}, {"buckets": [0, 5000]},
                   {"arms": [{"name": "control", "weight": 2}, {"name": "treatment", "weight": 1}]}):
        with pytest.raises(ExperimentImmutable, match="create a new experiment") as info:
            store.update(_exp(**{"salt": "new-salt", **change}))
        assert info.value.code == "FAILED_PRECONDITION"
    assert store.get("e1").salt == "new-salt"


def test_overlapping_buckets_in_a_layer_refused(store):
    store.create(_exp(id="a", buckets=[0, 6000]))
    store.create(_exp(id="b", buckets=[5000, 10000]))
    store.create(_exp(id="c", buckets=[6000, 10000]))
    store.start("a")
    with pytest.raises(LayerConflict, match="overlap running experiment 'a'"):
        store.start("b")
    store.start("c")


def test_cache_reloads_without_restart(store):
    now = [0.0]
    cache = ExperimentCache(store, refresh_s=5, clock=lambda: now[0])
    assert cache.running() == ()
    store.create(_exp())
    store.start("e1")
    assert cache.running() == ()          # not yet due
    now[0] = 5.0
    assert [e.id for e in cache.running()] == ["e1"]
    reloads = cache.reloads
    now[0] = 10.0
    cache.running()
    assert cache.reloads == reloads       # revision unchanged: no reload
    store.stop("e1")
    now[0] = 15.0
    assert cache.running() == ()


def test_cache_keeps_snapshot_when_store_down(store):
    store.create(_exp())
    store.start("e1")
    now = [0.0]
    cache = ExperimentCache(store, refresh_s=1, clock=lambda: now[0])
    assert len(cache.running()) == 1

    def broken():
        raise ExperimentStoreUnavailable("down")

    store.revision = broken
    now[0] = 2.0
    assert len(cache.running()) == 1 and cache.refresh_failures == 1


def test_unreachable_database_is_unavailable(tmp_path):
    with pytest.raises(ExperimentStoreUnavailable, match="campaigns.url") as info:
        ExperimentStore(f"sqlite:///{tmp_path}/missing/dir/x.db")
    assert info.value.code == "UNAVAILABLE"


def test_a_creation_race_is_retried_and_other_failures_are_not(tmp_path, monkeypatch):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/race.db"
    real = sa.MetaData.create_all
    calls = {"n": 0}

    def lose_the_race_once(self, bind, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:     # what the loser of two concurrent creators gets
            raise sa.exc.OperationalError("CREATE TABLE", {}, Exception("table experiment_definitions already exists"))
        return real(self, bind, *args, **kwargs)

    monkeypatch.setattr(sa.MetaData, "create_all", lose_the_race_once)
    store = ExperimentStore(url)
    assert calls["n"] == 2 and store.list() == []
    store.close()

    def disk_error(self, bind, *args, **kwargs):
        raise sa.exc.OperationalError("CREATE TABLE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(sa.MetaData, "create_all", disk_error)
    with pytest.raises(ExperimentStoreUnavailable, match="disk I/O error"):
        ExperimentStore(f"sqlite:///{tmp_path}/other.db")


def _open_store(url: str) -> str:
    try:
        ExperimentStore(url).close()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return f"{type(exc).__name__}: {exc}"


def test_processes_opening_a_fresh_database_at_once_all_succeed(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        for round_ in range(3):
            url = f"sqlite:///{tmp_path}/fresh-{round_}.db"
            assert pool.map(_open_store, [url] * 4) == ["ok"] * 4
