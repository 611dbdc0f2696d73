"""The worker stores users under privacy.pseudonymize(app id, settings.privacy.hmac_key) —
the key serving's feature lookup uses — and drops late events of erased users."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.integration


def test_worker_features_are_found_by_servings_lookup_and_erased_users_stay_erased(ingest_settings, produce):
    from features import open_store, read_events
    from privacy import erase_user
    from proto import events_pb2 as pb
    from serving import pseudonymize as serving_key
    from serving._features import UserFeatures
    from streaming._synthetic import SyntheticEvents

    s = ingest_settings.model_copy(update={"privacy": ingest_settings.privacy.model_copy(
        update={"hmac_key": "a-non-default-key-for-this-test-0123456789"})})
    now = int(time.time() * 1000)
    sim = SyntheticEvents(seed=9, users=1, items=1, campaigns=1)
    everything = pb.Consent(context=True, personalization=True, measurement=True)
    for user in ("app-user-kept", "app-user-erased"):
        sim.profiles[user] = everything
    erase_user(s, "app-user-erased")          # tombstone at ~now: the events below were produced before it
    ctx = [sim.context(user=u, time_ms=now - 2000) for u in ("app-user-kept", "app-user-erased")]
    fb = [sim.feedback(user=u, time_ms=now - 1000, kind=pb.IMPRESSION) for u in ("app-user-kept", "app-user-erased")]
    produce("context", ctx)
    produce("feedback", fb)

    from streaming import IngestWorker

    stop = threading.Event()
    timer = threading.Timer(60, stop.set)
    timer.start()
    try:
        totals = IngestWorker(s, "0").run(stop, max_idle_s=2.0)
    finally:
        timer.cancel()
    assert totals["dropped.context.erased"] == 1 and totals["dropped.feedback.erased"] == 1

    features = UserFeatures(lambda: open_store(s))
    kept = features.get(serving_key("app-user-kept", s.privacy.hmac_key))
    assert kept.get("user_context_events_24h") == 1 and kept.get("user_impressions_24h") == 1, kept
    assert features.get("app-user-kept") == {}, "the app's own id must not be a stored key"
    assert features.get(serving_key("app-user-erased", s.privacy.hmac_key)) == {}
    logged = set(read_events(s.data_dir, "feedback")["user_id"])
    assert logged == {serving_key("app-user-kept", s.privacy.hmac_key)}
