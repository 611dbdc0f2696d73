"""Simulated events in → the expected feature values online and offline, checked against
an independent polars computation over the same events; event logs appended."""

from __future__ import annotations

import time

import pytest

import _streaming_oracle as oracle
from _streaming_oracle import check, offline_latest, online

pytestmark = pytest.mark.integration

H = 3_600_000


def test_events_to_online_and_offline_features_match_independent_computation(ingest_settings, produce, run_worker):
    from features import read_events
    from streaming import LexiconMatcher, Purposes
    from streaming._synthetic import SyntheticEvents

    now = int(time.time() * 1000)
    sim = SyntheticEvents(seed=11, users=40, items=12, campaigns=4)
    # spread over ~30 h so the 1 h / 24 h / 7 d windows differ; a few users get bursts
    ctx = [sim.context(time_ms=now - sim.rng.randint(0, 30 * H)) for _ in range(400)]
    ctx += [sim.context(user="u00001", time_ms=now - sim.rng.randint(0, H // 2)) for _ in range(15)]
    fb = [sim.feedback(time_ms=now - sim.rng.randint(0, 30 * H)) for _ in range(400)]
    ex = [sim.exposure(time_ms=now - 1000) for _ in range(30)]
    produce("context", ctx)
    produce("feedback", fb)
    produce("exposures", ex)
    produce("context", ctx[:50])          # producer retries: duplicates must not double-count
    totals = run_worker(max_idle_s=2.0)
    kept = sum(m.consent.context for m in ctx + fb) + sum(m.consent.measurement for m in ex)
    assert totals["in.context"] == 465 and totals["stored"] == kept   # the 50 re-sent events added nothing

    matcher = LexiconMatcher()
    consent_of = lambda m: Purposes.of(m.consent)  # noqa: E731
    c = oracle.context_frame(ctx, matcher, consent_of)
    f = oracle.feedback_frame(fb, consent_of)

    exp_uc = oracle.user_context(c)
    got_uc = online(ingest_settings, "user_context", sorted(sim.users))
    check(exp_uc, got_uc)
    not_personal = {u for u in sim.users if u not in exp_uc}
    assert not_personal and all(got_uc[u]["context_events_24h"] is None for u in not_personal)

    check(oracle.user_engagement(f), online(ingest_settings, "user_engagement", sorted(sim.users)))
    exp_items = oracle.counters(f, "item_id")
    check(exp_items, online(ingest_settings, "item_stats", sorted(exp_items)))
    exp_camp = oracle.counters(f, "campaign_id")
    check(exp_camp, online(ingest_settings, "campaign_stats", sorted(exp_camp)))
    exp_pop = oracle.popularity(c, f)
    check(exp_pop, online(ingest_settings, "context_popularity", sorted(exp_pop)))

    # offline: the latest snapshot of every entity equals the online value
    off = offline_latest(ingest_settings, "item_stats")
    check(exp_items, {r["item_id"]: r for r in off.to_dicts()})
    off_uc = offline_latest(ingest_settings, "user_context", sim.users)
    check(exp_uc, {r["user_id"]: r for r in off_uc.to_dicts()})
    assert set(off_uc["user_id"]) == set(exp_uc)

    # event logs: feedback and exposures with measurement consent, once each
    log = read_events(ingest_settings.data_dir, "feedback")
    want = {m.event_id for m in fb if m.consent.context and m.consent.measurement}
    assert log.height == len(want) and set(log["event_id"]) == want
    serve = dict(zip(log["event_id"].to_list(), log["serve_ms"].to_list()))
    assert all(serve[m.event_id] == (m.serve_ms if m.type == 1 else None) for m in fb if m.event_id in want), \
        "impressions keep Recommend's serve time, the rest have none"
    assert any(v is not None for v in serve.values())
    exposures = read_events(ingest_settings.data_dir, "exposures")
    assert set(exposures["event_id"]) == {m.event_id for m in ex if m.consent.measurement}
