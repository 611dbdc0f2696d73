"""A day of context and consent events, as protobufs, onto Kafka.

``plan_traffic`` is pure: it decides every event (who, when, what context, which
consent is in force) from a seed. ``produce_traffic`` is the I/O rim: it sends the plan
with a kafka-python producer (``acks=all``, key = user id) as fast as possible, at a
fixed rate, or time-compressed (``speedup``; 1.0 = real time).

Consent: every user who appears gets a ``ConsentEvent`` with their profile just
before their first context event; a share of the consenting users withdraw later
(personalization and measurement off, and for half of them context too), and their
context events after that carry the withdrawn consent. Users without context consent
still emit context events (the device may send them; streaming must drop them), and
about 2% of contexts carry a sensitive object or intent that must never become a
feature.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator

import numpy as np

from simulation import _vocab as V
from simulation._context import ContextBatch, sample_contexts
from simulation._world import World
from simulation.errors import SimulationConfigError, SimulationUnavailable

log = logging.getLogger(__name__)

_LOCATIONS: tuple[str, ...] = tuple(scene.location_category for scene in V.SCENES)

APP_ID = "sim-assistant"


@dataclass(frozen=True)
class TrafficPlan:
    """Every event of a traffic run, sorted by event time (plain arrays, no protobufs yet)."""

    contexts: ContextBatch
    consent_user: np.ndarray        # int32 user index of each consent event
    consent_time_ms: np.ndarray     # int64
    consent_flags: np.ndarray       # bool (n, 3): context, personalization, measurement
    consent_withdrawal: np.ndarray  # bool: True for a withdrawal
    seed: int
    run_id: str
    """``<seed>-<start epoch ms>``: part of every event id, so a replay of the same plan
    repeats its ids (streaming dedupes them) while a new run gets new ones."""
    app_id: str = APP_ID

    @property
    def n_context(self) -> int:
        return len(self.contexts)

    @property
    def n_consent(self) -> int:
        return len(self.consent_user)

    @property
    def withdrawn_users(self) -> np.ndarray:
        return np.unique(self.consent_user[self.consent_withdrawal])


def plan_traffic(
    world: World,
    n_events: int | None = None,
    seed: int = 0,
    start_time: datetime | None = None,
    days: float = 1.0,
    *,
    withdrawal_share: float = 0.02,
) -> TrafficPlan:
    """Plan ``n_events`` context events (default: the users' expected activity over
    ``days``) plus the consent events, deterministically from ``seed``."""
    if not 0.0 <= withdrawal_share <= 1.0:
        raise SimulationConfigError(f"withdrawal_share {withdrawal_share} must be within [0, 1]")
    if n_events is None:
        n_events = int(round(float(world.latent.user_activity.sum()) * days))
    if n_events < 1:
        raise SimulationConfigError("n_events must be at least 1")
    rng = np.random.default_rng([seed, 303])
    ctx = sample_contexts(world, n_events, seed, start_time, days)
    users, first = np.unique(ctx.user, return_index=True)
    t = ctx.event_time_ms
    # initial consent: 1 ms before each user's first context event
    init_flags = np.stack([ctx.consent_context[first], ctx.consent_personalization[first],
                           ctx.consent_measurement[first]], axis=1)
    # withdrawals: consenting users, at a random moment of their activity
    eligible = users[init_flags[:, 1] | init_flags[:, 0]]
    n_w = int(round(withdrawal_share * len(eligible)))
    w_users = np.sort(rng.choice(eligible, n_w, replace=False)) if n_w else np.zeros(0, dtype=np.int64)
    t0, t1 = int(t.min()), int(t.max())
    w_time = rng.integers(t0, t1 + 1, n_w) if n_w else np.zeros(0, dtype=np.int64)
    w_keep_context = rng.random(n_w) < 0.5
    w_flags = np.stack([w_keep_context, np.zeros(n_w, bool), np.zeros(n_w, bool)], axis=1)
    # apply withdrawals to later context events of the same user
    cc, cp, cm = ctx.consent_context.copy(), ctx.consent_personalization.copy(), ctx.consent_measurement.copy()
    for u, wt, keep in zip(w_users, w_time, w_keep_context):
        later = (ctx.user == u) & (t >= wt)
        cc[later] &= keep
        cp[later] = False
        cm[later] = False
    ctx = ctx.with_consent(cc, cp, cm)
    c_user = np.concatenate([users, w_users]).astype(np.int32)
    c_time = np.concatenate([t[first] - 1, w_time]).astype(np.int64)
    c_flags = np.concatenate([init_flags, w_flags]).astype(bool)
    c_withdrawal = np.concatenate([np.zeros(len(users), bool), np.ones(n_w, bool)])
    order = np.argsort(c_time, kind="stable")
    start_ms = int(min(t0, int(c_time.min()))) if len(c_time) else t0
    return TrafficPlan(ctx, c_user[order], c_time[order], c_flags[order], c_withdrawal[order], seed,
                       f"{seed}-{start_ms}")


def _event_id(plan: TrafficPlan, kind: str, i: int) -> str:
    return f"sim-{plan.run_id}-{kind}-{i}"


def context_message(world: World, plan: TrafficPlan, i: int, *, event_time_ms: int | None = None):
    """The ``ContextEvent`` protobuf of context event ``i`` of the plan."""
    from proto import events_pb2 as pb

    ctx = plan.contexts
    u = int(ctx.user[i])
    return pb.ContextEvent(
        event_id=_event_id(plan, "ctx", i),
        event_time_ms=int(ctx.event_time_ms[i]) if event_time_ms is None else event_time_ms,
        user_id=world.user_ids[u],
        consent=pb.Consent(context=bool(ctx.consent_context[i]), personalization=bool(ctx.consent_personalization[i]),
                           measurement=bool(ctx.consent_measurement[i])),
        context=context_proto(world, ctx, i),
        app_id=plan.app_id,
    )


def context_proto(world: World, ctx: ContextBatch, i: int):
    """The ``Context`` protobuf of request ``i`` (raw: sensitive objects/intents included)."""
    from proto import events_pb2 as pb

    return pb.Context(
        device=pb.GLASSES if ctx.device[i] == 0 else pb.PHONE,
        scene=world.scenes[ctx.scene[i]],
        objects=ctx.object_labels(world, i),
        intent_text=str(ctx.intent_text[i]),
        location_category=_LOCATIONS[ctx.scene[i]],
        region=str(ctx.region[i]),
        local_hour=int(ctx.local_hour[i]),
        local_weekday=int(ctx.local_weekday[i]),
    )


def consent_message(world: World, plan: TrafficPlan, j: int, *, event_time_ms: int | None = None):
    """The ``ConsentEvent`` protobuf of consent event ``j`` of the plan."""
    from proto import events_pb2 as pb

    c, p, m = (bool(x) for x in plan.consent_flags[j])
    return pb.ConsentEvent(
        event_id=_event_id(plan, "consent", j),
        event_time_ms=int(plan.consent_time_ms[j]) if event_time_ms is None else event_time_ms,
        user_id=world.user_ids[int(plan.consent_user[j])],
        consent=pb.Consent(context=c, personalization=p, measurement=m),
    )


class _Encoder:
    """Builds the plan's protobufs fast: every per-event field pre-converted to Python lists once."""

    def __init__(self, world: World, plan: TrafficPlan) -> None:
        from proto import events_pb2 as pb

        self.pb = pb
        self.plan = plan
        ctx = plan.contexts
        ids = world.user_ids
        self.c_user = [ids[u] for u in ctx.user.tolist()]
        self.c_time = ctx.event_time_ms.tolist()
        self.c_consent = list(zip(ctx.consent_context.tolist(), ctx.consent_personalization.tolist(),
                                  ctx.consent_measurement.tolist()))
        self.c_device = [pb.GLASSES if d == 0 else pb.PHONE for d in ctx.device.tolist()]
        self.c_scene = [world.scenes[s] for s in ctx.scene.tolist()]
        self.c_location = [_LOCATIONS[s] for s in ctx.scene.tolist()]
        vocab = world.object_vocab
        self.c_objects = [[vocab[o] for o in row if o >= 0] for row in ctx.objects.tolist()]
        self.c_intent = [str(t) for t in ctx.intent_text.tolist()]
        self.c_region = [str(r) for r in ctx.region.tolist()]
        self.c_hour = ctx.local_hour.tolist()
        self.c_weekday = ctx.local_weekday.tolist()
        self.k_user = [ids[u] for u in plan.consent_user.tolist()]
        self.k_time = plan.consent_time_ms.tolist()
        self.k_flags = [tuple(f) for f in plan.consent_flags.tolist()]

    def context(self, i: int, event_time_ms: int | None = None):
        pb = self.pb
        c, p, m = self.c_consent[i]
        return pb.ContextEvent(
            event_id=_event_id(self.plan, "ctx", i),
            event_time_ms=self.c_time[i] if event_time_ms is None else event_time_ms,
            user_id=self.c_user[i],
            consent=pb.Consent(context=c, personalization=p, measurement=m),
            context=pb.Context(device=self.c_device[i], scene=self.c_scene[i], objects=self.c_objects[i],
                               intent_text=self.c_intent[i], location_category=self.c_location[i],
                               region=self.c_region[i], local_hour=self.c_hour[i], local_weekday=self.c_weekday[i]),
            app_id=self.plan.app_id,
        )

    def consent(self, j: int, event_time_ms: int | None = None):
        pb = self.pb
        c, p, m = self.k_flags[j]
        return pb.ConsentEvent(
            event_id=_event_id(self.plan, "consent", j),
            event_time_ms=self.k_time[j] if event_time_ms is None else event_time_ms,
            user_id=self.k_user[j],
            consent=pb.Consent(context=c, personalization=p, measurement=m),
        )


def iter_plan(plan: TrafficPlan) -> Iterator[tuple[str, int, int]]:
    """(stream, index, event_time_ms) of every event in time order ("context" | "consent")."""
    ct, kt = plan.contexts.event_time_ms, plan.consent_time_ms
    i = j = 0
    while i < len(ct) or j < len(kt):
        if j < len(kt) and (i >= len(ct) or kt[j] <= ct[i]):
            yield "consent", j, int(kt[j])
            j += 1
        else:
            yield "context", i, int(ct[i])
            i += 1


def encode_plan(world: World, plan: TrafficPlan) -> Iterator[tuple[str, bytes, bytes, int]]:
    """(stream, key, serialized value, event_time_ms) of every event in time order.

    For callers that send the bytes themselves (a benchmark pre-producing its input,
    a test feeding a consumer directly); ``stream`` is "context" or "consent".
    """
    enc = _Encoder(world, plan)
    for stream, idx, t_ms in iter_plan(plan):
        msg = enc.context(idx) if stream == "context" else enc.consent(idx)
        yield stream, msg.user_id.encode(), msg.SerializeToString(), t_ms


@dataclass
class TrafficStats:
    context_events: int = 0
    consent_events: int = 0
    withdrawals: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    topics: dict[str, str] = field(default_factory=dict)


def produce_traffic(
    world: World,
    plan: TrafficPlan,
    settings,
    *,
    rate: float | None = None,
    speedup: float | None = None,
    stamp_now: bool = False,
    producer=None,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TrafficStats:
    """Send the plan to ``settings.topic("context")`` / ``settings.topic("consent")``.

    Pacing: ``rate`` events/s, or ``speedup`` × event time (1.0 = real time), or as
    fast as possible when both are ``None``. ``stamp_now`` replaces event times with
    the wall clock at send (for freshness measurements). ``producer`` may be an
    existing kafka-python ``KafkaProducer``; otherwise one is created (``acks=all``)
    and closed. ``progress(n)`` is called with the number of events sent since the
    last call.
    """
    if rate is not None and speedup is not None:
        raise SimulationConfigError("give either rate (events/s) or speedup (time compression), not both")
    if (rate is not None and rate <= 0) or (speedup is not None and speedup <= 0):
        raise SimulationConfigError("rate and speedup must be positive")
    topics = {"context": settings.topic("context"), "consent": settings.topic("consent")}
    own = producer is None
    if own:
        producer = _producer(settings)
    stats = TrafficStats(topics=topics)
    encoder = _Encoder(world, plan)
    start = clock()
    t_first = None
    sent_since = 0
    try:
        for n, (stream, idx, t_ms) in enumerate(iter_plan(plan)):
            if rate is not None:
                wait = start + n / rate - clock()
                if wait > 0:
                    sleep(wait)
            elif speedup is not None:
                t_first = t_ms if t_first is None else t_first
                wait = start + (t_ms - t_first) / 1000.0 / speedup - clock()
                if wait > 0:
                    sleep(wait)
            now_ms = int(time.time() * 1000) if stamp_now else None
            if stream == "context":
                msg = encoder.context(idx, now_ms)
                stats.context_events += 1
            else:
                msg = encoder.consent(idx, now_ms)
                stats.consent_events += 1
                stats.withdrawals += int(plan.consent_withdrawal[idx])
            producer.send(topics[stream], key=msg.user_id.encode(), value=msg.SerializeToString(),
                          timestamp_ms=msg.event_time_ms)
            sent_since += 1
            if progress is not None and sent_since >= 1000:
                progress(sent_since)
                sent_since = 0
        producer.flush(timeout=60)
    except Exception as exc:  # kafka-python raises its own KafkaError subclasses
        if type(exc).__module__.startswith("kafka"):
            raise SimulationUnavailable(f"could not produce to Kafka ({exc}); is the broker up ('sightline stack up') "
                                        f"and were the topics created?") from exc
        raise
    finally:
        if own:
            producer.close(timeout=10)
    if progress is not None and sent_since:
        progress(sent_since)
    stats.seconds = clock() - start
    total = stats.context_events + stats.consent_events
    stats.events_per_s = total / stats.seconds if stats.seconds > 0 else float("inf")
    return stats


def _producer(settings):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from sightline.stack import KafkaStackError, kafka_bootstrap

    try:
        bootstrap = kafka_bootstrap(settings)
    except KafkaStackError as exc:
        raise SimulationUnavailable(f"no Kafka broker: {exc}; start one with 'sightline stack up' "
                                    "or set SIGHTLINE_KAFKA_BOOTSTRAP") from exc
    try:
        return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024,
                             max_in_flight_requests_per_connection=5, retries=5)
    except KafkaError as exc:  # kafka-python 3 has no NoBrokersAvailable any more
        raise SimulationUnavailable("no Kafka broker answers; start one with 'sightline stack up' "
                                    "or set SIGHTLINE_KAFKA_BOOTSTRAP") from exc
