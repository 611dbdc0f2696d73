"""Every consent combination, sensitive categories, and a withdrawal."""

from __future__ import annotations

import itertools
import time

import pytest

from _streaming_oracle import online, stored_id

pytestmark = pytest.mark.integration


def test_consent_combinations_sensitive_categories_and_withdrawal(ingest_settings, produce, run_worker):
    from features import read_events
    from proto import events_pb2 as pb
    from streaming._synthetic import SyntheticEvents

    now = int(time.time() * 1000)
    sim = SyntheticEvents(seed=5, users=1, items=1, campaigns=1)
    combos = list(itertools.product((False, True), repeat=3))
    users = {combo: f"user-{''.join('cpm'[i] if v else '-' for i, v in enumerate(combo))}" for combo in combos}
    ctx, fb = [], []
    for combo, user in users.items():
        sim.profiles[user] = pb.Consent(context=combo[0], personalization=combo[1], measurement=combo[2])
        for k in range(3):
            ctx.append(sim.context(user=user, time_ms=now - 60_000 * k, sensitive_rate=0.0))
        fb.append(sim.feedback(user=user, time_ms=now - 1000, kind=pb.IMPRESSION))
    # sensitive context: scene, objects and intent recognised as sensitive never become features
    sensitive_user = users[(True, True, True)]
    ctx.append(pb.ContextEvent(event_id="sens-1", event_time_ms=now, user_id=sensitive_user,
                               consent=pb.Consent(context=True, personalization=True, measurement=True),
                               context=pb.Context(scene="church", objects=["pill", "yoga_mat"],
                                                  intent_text="where is the nearest pharmacy")))
    produce("context", ctx)
    produce("feedback", fb)
    totals = run_worker(max_idle_s=2.0)
    assert totals["dropped.context.no_context"] == 12 and totals["dropped.feedback.no_context"] == 4
    assert totals["sensitive.scene"] >= 1 and totals["sensitive.object"] >= 1 and totals["sensitive.intent"] >= 1

    uc = online(ingest_settings, "user_context", list(users.values()))
    ue = online(ingest_settings, "user_engagement", list(users.values()))
    for (c, p, m), user in users.items():
        personal = c and p
        assert (uc[user]["context_events_24h"] is not None) == personal, user
        assert (ue[user]["impressions_24h"] is not None) == personal, user
        if personal:
            assert uc[user]["context_events_24h"] == 3 + (user == sensitive_user)
    row = uc[sensitive_user]
    assert "church" not in row["recent_scenes"] and "pill" not in row["recent_objects"]
    assert "yoga_mat" in row["recent_objects"]
    assert not any(cat.split("/")[0] in {"health", "religion", "politics", "sexuality", "minors"}
                   for cat in row["recent_intent_categories"])
    # aggregates count context-consented events only
    item = online(ingest_settings, "item_stats", [sim.items[0][0]])[sim.items[0][0]]
    assert item["impressions_1h"] == 4
    logged = set(read_events(ingest_settings.data_dir, "feedback")["user_id"])
    assert logged == {stored_id(ingest_settings, u) for (c, p, m), u in users.items() if c and m}, "pseudonyms only"

    # withdrawal: personalization off → rows deleted at once, later (even stale-consent) events not stored
    target = users[(True, True, True)]
    withdraw = sim.consent(target, pb.Consent(context=True, personalization=False, measurement=True), time_ms=now + 1000)
    stale = pb.ContextEvent(event_id="after-withdrawal", event_time_ms=now + 2000, user_id=target,
                            consent=pb.Consent(context=True, personalization=True, measurement=True),
                            context=pb.Context(scene="gym", objects=["dumbbell"]))
    stale_fb = sim.feedback(user=target, time_ms=now + 2000, kind=pb.CLICK)
    stale_fb.consent.CopyFrom(pb.Consent(context=True, personalization=True, measurement=True))
    produce("consent", [withdraw])
    produce("context", [stale])
    produce("feedback", [stale_fb])
    totals = run_worker(max_idle_s=2.0)
    assert totals["consent.erased_users"] == 1
    assert online(ingest_settings, "user_context", [target])[target]["context_events_24h"] is None
    assert online(ingest_settings, "user_engagement", [target])[target]["clicks_24h"] is None
    other = users[(True, True, False)]
    assert online(ingest_settings, "user_context", [other])[other]["context_events_24h"] == 3
    assert online(ingest_settings, "item_stats", [sim.items[0][0]])[sim.items[0][0]]["clicks_1h"] == 1

    # re-grant: the profile starts again from nothing (the erased history stays erased)
    produce("consent", [sim.consent(target, pb.Consent(context=True, personalization=True), time_ms=now + 3000)])
    produce("context", [sim.context(user=target, time_ms=now + 4000)])
    run_worker(max_idle_s=2.0)
    assert online(ingest_settings, "user_context", [target])[target]["context_events_24h"] == 1

    # context withdrawn: everything from the user is dropped afterwards
    produce("consent", [sim.consent(target, pb.Consent(), time_ms=now + 5000)])
    produce("context", [sim.context(user=target, time_ms=now + 6000)])
    totals = run_worker(max_idle_s=2.0)
    assert totals["dropped.context.no_context"] == 1
    assert online(ingest_settings, "user_context", [target])[target]["context_events_24h"] is None
