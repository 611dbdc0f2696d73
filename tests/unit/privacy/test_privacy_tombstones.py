"""Tombstones: durable, shared between instances, time-aware, prunable."""

import threading

from privacy import Tombstones, tombstone_path


def test_add_contains_and_drops_only_events_before_the_erasure(make_settings):
    s = make_settings()
    t = Tombstones(s)
    assert not t.contains("p1") and len(t) == 0
    at = t.add(["p1", "p2"], erased_at_ms=1_000)
    assert at == 1_000 and t.contains("p1") and "p2" in t and not t.contains("p3")
    assert t.drops("p1", 999) and t.drops("p1", 1_000)
    assert not t.drops("p1", 1_001), "an event after the erasure (user came back and consented) is kept"
    assert not t.drops("p3", 0)
    assert tombstone_path(s.data_dir).read_text().count("\n") == 2


def test_another_instance_sees_new_tombstones_after_refresh(make_settings):
    s = make_settings()
    now = [0.0]
    reader = Tombstones(s, refresh_s=1.0, clock=lambda: now[0])
    assert not reader.contains("p1")
    Tombstones(s).add(["p1"])
    assert not reader.contains("p1"), "within refresh_s the cached set is used (no stat per event)"
    now[0] = 1.5
    assert reader.contains("p1")


def test_prune_forgets_old_tombstones_and_keeps_newer(make_settings):
    t = Tombstones(make_settings())
    t.add(["old"], erased_at_ms=100)
    t.add(["new"], erased_at_ms=5_000)
    t.add(["old"], erased_at_ms=6_000)  # erased again later: the latest time counts
    t.add(["gone"], erased_at_ms=200)
    assert t.prune(1_000) == 1
    assert t.snapshot() == {"old": 6_000, "new": 5_000}


def test_concurrent_adds_are_all_recorded(make_settings):
    s = make_settings()
    threads = [threading.Thread(target=lambda i=i: Tombstones(s).add([f"u{i}-{j}" for j in range(20)]))
               for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(Tombstones(s)) == 160


def test_malformed_ids_are_not_written(make_settings):
    t = Tombstones(make_settings())
    t.add(["ok", "", "a\tb", "c\nd"])
    assert set(t.snapshot()) == {"ok"}


def test_lookup_is_fast(make_settings):
    import time

    t = Tombstones(make_settings())
    t.add([f"u{i}" for i in range(10_000)])
    start = time.perf_counter()
    for i in range(20_000):
        t.contains(f"x{i}")
    per_call_us = (time.perf_counter() - start) / 20_000 * 1e6
    assert per_call_us < 50, f"{per_call_us:.1f} us per lookup"
