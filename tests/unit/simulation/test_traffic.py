"""Traffic planning and producing (with a recording producer; the real broker is in integration)."""

from datetime import datetime, timezone

import numpy as np
import pytest

from proto import events_pb2 as pb
from simulation import (
    SimulationConfigError, consent_message, context_message, encode_plan, iter_plan, plan_traffic, produce_traffic,
)


@pytest.fixture(scope="module")
def plan(small_world):
    return plan_traffic(small_world, 3_000, seed=2, withdrawal_share=0.05)


class RecordingProducer:
    def __init__(self):
        self.sent = []

    def send(self, topic, key=None, value=None, timestamp_ms=None):
        self.sent.append((topic, key, value, timestamp_ms))

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_plan_is_deterministic_and_time_ordered(small_world, plan):
    again = plan_traffic(small_world, 3_000, seed=2, withdrawal_share=0.05)
    np.testing.assert_array_equal(plan.contexts.event_time_ms, again.contexts.event_time_ms)
    np.testing.assert_array_equal(plan.consent_flags, again.consent_flags)
    times = [t for _, _, t in iter_plan(plan)]
    assert times == sorted(times)
    assert len(times) == plan.n_context + plan.n_consent


def test_consent_comes_first_and_withdrawals_apply_to_later_events(small_world, plan):
    ctx = plan.contexts
    first_consent = {}
    for j, (u, t, w) in enumerate(zip(plan.consent_user, plan.consent_time_ms, plan.consent_withdrawal)):
        if not w:
            first_consent[int(u)] = int(t)
    for i in range(len(ctx)):
        assert first_consent[int(ctx.user[i])] < ctx.event_time_ms[i]
    withdrawn = plan.withdrawn_users
    assert len(withdrawn) > 0
    for j in np.flatnonzero(plan.consent_withdrawal):
        u, t = plan.consent_user[j], plan.consent_time_ms[j]
        later = (ctx.user == u) & (ctx.event_time_ms >= t)
        assert not ctx.consent_personalization[later].any() and not ctx.consent_measurement[later].any()
        assert not plan.consent_flags[j, 1] and not plan.consent_flags[j, 2]
    # some users have no context consent at all, and some contexts are sensitive
    assert (~ctx.consent_context).any()
    assert (ctx.intent_sensitive >= 0).any() or small_world.object_sensitive[ctx.objects[ctx.objects >= 0]].any()


def test_messages_carry_ids_consent_and_context(small_world, plan):
    msg = context_message(small_world, plan, 0)
    parsed = pb.ContextEvent.FromString(msg.SerializeToString())
    assert parsed.event_id and parsed.user_id.startswith("u") and parsed.app_id
    assert parsed.context.scene in small_world.scenes
    assert parsed.context.device in (pb.GLASSES, pb.PHONE)
    assert 0 <= parsed.context.local_hour < 24
    c = consent_message(small_world, plan, 0)
    assert c.event_id != parsed.event_id and c.user_id
    ids = {context_message(small_world, plan, i).event_id for i in range(200)}
    assert len(ids) == 200
    assert context_message(small_world, plan, 7).event_id == context_message(small_world, plan, 7).event_id


def test_produce_sends_everything_keyed_by_user(small_world, plan, make_settings):
    settings = make_settings()
    producer = RecordingProducer()
    counted = []
    stats = produce_traffic(small_world, plan, settings, producer=producer, progress=counted.append)
    assert stats.context_events == plan.n_context and stats.consent_events == plan.n_consent
    assert sum(counted) == len(producer.sent)
    topics = {t for t, *_ in producer.sent}
    assert topics == {settings.topic("context"), settings.topic("consent")}
    for topic, key, value, ts in producer.sent[:300]:
        msg = (pb.ContextEvent if topic == settings.topic("context") else pb.ConsentEvent).FromString(value)
        assert key == msg.user_id.encode() and ts == msg.event_time_ms


def test_pacing_by_rate_uses_the_clock(small_world, make_settings):
    small = plan_traffic(small_world, 50, seed=3, withdrawal_share=0.0)
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    stats = produce_traffic(small_world, small, make_settings(), rate=100.0, producer=RecordingProducer(),
                            clock=lambda: now[0], sleep=sleep)
    total = small.n_context + small.n_consent
    assert stats.seconds == pytest.approx((total - 1) / 100.0)
    with pytest.raises(SimulationConfigError):
        produce_traffic(small_world, small, make_settings(), rate=1.0, speedup=2.0, producer=RecordingProducer())


def test_fast_encoder_matches_the_public_builders(small_world, plan):
    from simulation._traffic import _Encoder

    enc = _Encoder(small_world, plan)
    for i in (0, 1, 17, plan.n_context - 1):
        assert enc.context(i) == context_message(small_world, plan, i)
    for j in (0, plan.n_consent - 1):
        assert enc.consent(j) == consent_message(small_world, plan, j)
    # a new run (other start) gets new event ids; a replay of the same plan the same ones
    other = plan_traffic(small_world, 3_000, seed=2, withdrawal_share=0.05,
                         start_time=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert context_message(small_world, other, 0).event_id != context_message(small_world, plan, 0).event_id


def test_encode_plan_yields_serialized_events_in_time_order(small_world, plan):
    out = list(encode_plan(small_world, plan))
    assert len(out) == plan.n_context + plan.n_consent
    assert [t for *_, t in out] == sorted(t for *_, t in out)
    stream, key, value, t = next(o for o in out if o[0] == "context")
    assert pb.ContextEvent.FromString(value).user_id.encode() == key


def test_time_compression_follows_event_times(small_world, make_settings):
    small = plan_traffic(small_world, 100, seed=6, days=1.0, withdrawal_share=0.0)
    now = [0.0]

    def sleep(s):
        now[0] += s

    stats = produce_traffic(small_world, small, make_settings(), speedup=3600.0, producer=RecordingProducer(),
                            clock=lambda: now[0], sleep=sleep)
    times = [t for *_, t in iter_plan(small)]
    assert stats.seconds == pytest.approx((times[-1] - times[0]) / 1000 / 3600.0, rel=1e-6)
