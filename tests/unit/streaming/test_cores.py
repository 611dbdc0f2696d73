"""Pure cores of the streaming stage: decoding/validation, consent rules, category matching,
window computation, and the pipeline's exactly-once effect with fake sinks."""

from __future__ import annotations

import time
from collections import defaultdict

import polars as pl
import pytest

from proto import events_pb2 as pb
from streaming import (LexiconMatcher, Pipeline, Purposes, Record, StateStore, WindowParams, compute_features, decide,
                       decode, encode_event, to_buckets)
from streaming.errors import InvalidMessage

NOW = 1_795_000_000_000


def ctx_event(eid="e1", user="u1", ts=NOW, consent=(True, True, True), scene="gym", objects=("yoga_mat",),
              intent="I need running shoes under 100 euros"):
    return pb.ContextEvent(event_id=eid, event_time_ms=ts, user_id=user, consent=pb.Consent(
        context=consent[0], personalization=consent[1], measurement=consent[2]),
        context=pb.Context(scene=scene, objects=list(objects), intent_text=intent))


# -- decode -------------------------------------------------------------------------------
@pytest.mark.parametrize("value,reason", [
    (b"\xff\xff\xff", "undecodable"),
    (pb.FeedbackEvent(event_id="f", user_id="u", event_time_ms=NOW, type=pb.CLICK, item_id="i",
                      context=pb.Context(scene="x")).SerializeToString(), "wrong_schema"),
    (pb.ContextEvent(event_id="e", user_id="u", event_time_ms=NOW).SerializeToString(), "missing_field"),
    (pb.ContextEvent(user_id="u", event_time_ms=NOW, context=pb.Context()).SerializeToString(), "missing_field"),
    (ctx_event(ts=12345).SerializeToString(), "invalid_value"),
    (b"x" * 2000, "oversize"),
    (None, "undecodable"),
])
def test_decode_rejects_with_reason(value, reason):
    with pytest.raises(InvalidMessage) as exc:
        decode("context", value, None, max_bytes=1000, now_ms=NOW)
    assert exc.value.reason == reason and exc.value.detail


def test_decode_accepts_good_event_and_checks_schema_header():
    _, value, headers = encode_event(ctx_event())
    assert decode("context", value, headers, max_bytes=10_000, now_ms=NOW).event_id == "e1"
    with pytest.raises(InvalidMessage, match="wrong_schema"):
        decode("feedback", value, headers, max_bytes=10_000, now_ms=NOW)


# -- consent ------------------------------------------------------------------------------
def test_consent_rules():
    full = Purposes(True, True, True)
    assert decide("context", Purposes(False, True, True), None).keep is False
    d = decide("context", Purposes(True, False, True), None)
    assert d.keep and not d.user_keyed and not d.log
    d = decide("feedback", full, None)
    assert d.keep and d.user_keyed and d.log
    assert not decide("feedback", Purposes(True, True, False), None).log
    # the user's latest ConsentEvent narrows the event's own purposes (withdrawal wins)
    assert not decide("context", full, Purposes(True, False, True)).user_keyed
    assert not decide("context", full, Purposes()).keep
    assert decide("exposures", Purposes(False, False, True), None).keep
    assert Purposes(True, False, True).withdraws_profile and not full.withdraws_profile


# -- categories -----------------------------------------------------------------------------
def test_lexicon_longest_match_synonyms_and_sensitive():
    m = LexiconMatcher()
    assert m.match("I need running shoes under 100 euros").categories == ("sports/running_shoes",)
    assert m.match("a new coffee maker").categories == ("kitchen/coffee_makers",)
    assert m.match("yoga_mat").categories == ("sports/yoga",)
    hit = m.match("where is the nearest pharmacy")
    assert hit.categories == () and hit.sensitive == ("health/pharmacy",)
    assert m.match("church").sensitive and m.match("").categories == ()


# -- windows --------------------------------------------------------------------------------
def _ctx_frame(rows):
    return pl.DataFrame(rows, schema={"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "user_keyed": pl.Boolean,
                                      "scene": pl.String, "objects": pl.List(pl.String),
                                      "intent_categories": pl.List(pl.String), "categories": pl.List(pl.String)},
                        orient="row")


def _fb_frame(rows):
    return pl.DataFrame(rows, schema={"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "user_keyed": pl.Boolean,
                                      "type": pl.Int64, "item_id": pl.String, "campaign_id": pl.String,
                                      "category": pl.String, "scene": pl.String, "spend": pl.Float64}, orient="row")


def test_windows_are_minute_buckets_ending_at_the_latest_event():
    H = 3_600_000
    ctx = _ctx_frame([
        ("a", NOW - 2 * H, "u", True, "gym", ["mat"], [], ["sports/yoga"]),
        ("b", NOW - 30 * 60_000, "u", True, "cafe", [], ["grocery/coffee"], ["grocery/coffee"]),
        ("c", NOW, "u", True, "gym", [], [], []),
        ("d", NOW - 25 * H, "u", True, "park", [], [], []),      # outside 24 h
        ("e", NOW, "v", False, "gym", [], [], ["sports/yoga"]),   # not personalized: aggregates only
    ])
    b = to_buckets(ctx, _fb_frame([]))
    uc = compute_features("user_context", b.filter(pl.col("view") == "uc"), WindowParams()).row(0, named=True)
    assert uc["user_id"] == "u" and uc["context_events_1h"] == 2 and uc["context_events_24h"] == 3
    assert uc["recent_scenes"] == ["gym", "cafe"] and uc["recent_scene_counts_24h"] == [2, 1]
    assert uc["recent_intent_categories"] == ["grocery/coffee"]
    assert set(b.filter(pl.col("view") == "uc")["entity"]) == {"u"}
    pop = compute_features("context_popularity", b.filter(pl.col("view") == "cp"), WindowParams())
    assert dict(zip(pop["context_key"], pop["events_24h"])) == {"gym|sports/yoga": 2, "cafe|grocery/coffee": 1}


def test_item_counters_and_smoothed_ctr():
    fb = _fb_frame([(f"f{i}", NOW - i * 1000, "u", True, 1 if i % 4 else 2, "i1", "c1", "sports/yoga", "gym", 0.5)
                    for i in range(8)])
    b = to_buckets(_ctx_frame([]), fb)
    p = WindowParams(ctr_prior=0.1, ctr_prior_weight=10)
    item = compute_features("item_stats", b.filter(pl.col("view") == "it"), p).row(0, named=True)
    assert item["impressions_1h"] == 6 and item["clicks_1h"] == 2
    assert item["ctr_1h"] == pytest.approx((2 + 1) / (6 + 10))
    camp = compute_features("campaign_stats", b.filter(pl.col("view") == "ca"), p).row(0, named=True)
    assert camp["spend_24h"] == pytest.approx(4.0)
    ue = compute_features("user_engagement", b.filter(pl.col("view") == "ue"), p).row(0, named=True)
    assert ue["engaged_categories_7d"] == ["sports/yoga"] and ue["engaged_category_clicks_7d"] == [2]


# -- pipeline with fakes: replays add nothing, withdrawal erases ---------------------------------
class FakeSink:
    def __init__(self):
        self.online = defaultdict(dict)
        self.offline = defaultdict(list)

    def write_online(self, view, rows):
        key = rows.columns[0]
        for r in rows.to_dicts():
            self.online[view][r[key]] = r

    def write_offline(self, view, rows):
        self.offline[view].append(rows)

    def delete_users(self, user_ids):
        for view in ("user_context", "user_engagement"):
            for u in user_ids:
                self.online[view].pop(u, None)


class FakeDLQ:
    def __init__(self):
        self.sent = []

    def send(self, record, kind, error):
        self.sent.append((record.offset, error.reason))


def _pipeline(tmp_path, sink=None):
    sink = sink or FakeSink()
    dlq = FakeDLQ()
    p = Pipeline(kinds_by_topic={"c": "context", "s": "consent", "f": "feedback"},
                 state=StateStore(tmp_path / "state.db"), sink=sink, dead_letters=dlq, matcher=LexiconMatcher(),
                 data_dir=tmp_path, clock=lambda: NOW / 1000 + 1)
    return p, sink, dlq


def test_replayed_batch_does_not_double_count_and_bad_messages_go_to_dlq(tmp_path):
    p, sink, dlq = _pipeline(tmp_path)
    records = [Record("c", 0, i, ctx_event(eid=f"e{i}", ts=NOW - i * 1000).SerializeToString()) for i in range(5)]
    records.insert(2, Record("c", 0, 99, b"\x00garbage"))
    first = p.process(records)
    assert first.counts["stored"] == 5 and dlq.sent == [(99, "undecodable")]
    assert sink.online["user_context"][p.pseudonym("u1")]["context_events_1h"] == 5
    again = p.process(records)                       # the crash-replay case
    assert again.counts["replayed"] == 5 and again.counts["stored"] == 0
    assert sink.online["user_context"][p.pseudonym("u1")]["context_events_1h"] == 5
    p.flush()
    assert sink.offline["user_context"][0]["context_events_1h"].to_list() == [5]


def test_withdrawal_erases_online_rows_and_state(tmp_path):
    p, sink, _ = _pipeline(tmp_path)
    p.process([Record("c", 0, 0, ctx_event().SerializeToString())])
    assert p.pseudonym("u1") in sink.online["user_context"]
    withdraw = pb.ConsentEvent(event_id="w", event_time_ms=NOW + 1, user_id="u1", consent=pb.Consent(context=True))
    later = ctx_event(eid="e2", ts=NOW + 2)          # still claims personalization: the withdrawal wins
    result = p.process([Record("s", 0, 0, withdraw.SerializeToString()), Record("c", 0, 1, later.SerializeToString())])
    assert result.counts["consent.erased_users"] == 1 and result.counts["kept.context.not_personalized"] == 1
    assert p.pseudonym("u1") not in sink.online["user_context"]
    assert p.state.buckets("uc", [p.pseudonym("u1")]).height == 0


def test_stored_user_ids_are_pseudonyms_and_anonymous_feedback_stays_empty(tmp_path):
    """Streaming stores privacy.pseudonymize(app id) (what serving looks up), never the app id or a hash of ""."""
    from privacy import pseudonymize
    from serving import pseudonymize as serving_key
    from sightline.settings import PrivacySettings

    p = Pipeline(kinds_by_topic={"c": "context", "f": "feedback"}, state=StateStore(tmp_path / "state.db"),
                 sink=FakeSink(), dead_letters=FakeDLQ(), matcher=LexiconMatcher(), data_dir=tmp_path,
                 clock=lambda: NOW / 1000 + 1, hmac_key="k-test")
    anonymous = pb.FeedbackEvent(event_id="f-anon", event_time_ms=NOW, user_id="", type=pb.IMPRESSION, item_id="cr1",
                                 consent=pb.Consent(context=True, personalization=False, measurement=True))
    p.process([Record("c", 0, 0, ctx_event().SerializeToString()), Record("f", 0, 0, anonymous.SerializeToString())])
    stored = set(p.sink.online["user_context"])
    assert stored == {pseudonymize("u1", "k-test")} == {serving_key("u1", "k-test")}
    assert p.pseudonym("") == ""
    p.flush()
    from features import read_events

    assert read_events(tmp_path, "feedback")["user_id"].to_list() == [""]
    # the default key is the development key load_settings gives
    assert _pipeline(tmp_path / "d")[0].pseudonym("u1") == pseudonymize("u1", PrivacySettings().hmac_key)


def test_events_of_an_erased_user_produced_before_the_erasure_are_dropped(tmp_path):
    from privacy import Tombstones, tombstone_path

    p, sink, _ = _pipeline(tmp_path)
    Tombstones(path=tombstone_path(tmp_path)).add([p.pseudonym("u1")], erased_at_ms=NOW)
    late = p.process([Record("c", 0, 0, ctx_event(eid="late", ts=NOW - 1000).SerializeToString())])
    assert late.counts["dropped.context.erased"] == 1 and "user_context" not in sink.online
    back = p.process([Record("c", 0, 1, ctx_event(eid="back", ts=NOW + 1000).SerializeToString())])
    assert back.counts["stored"] == 1 and p.pseudonym("u1") in sink.online["user_context"]


def test_erasure_deletes_the_consent_row_and_zeroes_the_freed_pages(tmp_path):
    from streaming._consent import Purposes

    path = tmp_path / "state.db"
    state = StateStore(path)
    with state.transaction() as db:
        state.set_consent(db, "secret-user-0123456789", NOW, Purposes(True, True, True))
    with state.transaction() as db:
        StateStore.erase_user_state(db, ["secret-user-0123456789"])
    assert state.consent(["secret-user-0123456789"]) == {}
    assert not [f.name for f in tmp_path.glob("state.db*") if b"secret-user-0123456789" in f.read_bytes()]
    state.close()


# -- online store tuning ----------------------------------------------------------------------
def test_only_an_index_the_primary_key_covers_is_dropped(tmp_path):
    import sqlite3

    from streaming._feast import drop_redundant_index

    db = sqlite3.connect(tmp_path / "online.db")
    ddl = "(entity_key BLOB, feature_name TEXT, value BLOB, event_ts timestamp{pk})"
    db.execute("CREATE TABLE feast_like " + ddl.format(pk=", PRIMARY KEY(entity_key, feature_name)"))
    db.execute("CREATE INDEX feast_like_ek ON feast_like (entity_key)")
    db.execute("CREATE TABLE no_pk " + ddl.format(pk=""))
    db.execute("CREATE INDEX no_pk_ek ON no_pk (entity_key)")
    assert drop_redundant_index(db, "feast_like") and not drop_redundant_index(db, "feast_like")
    assert not drop_redundant_index(db, "no_pk"), "without the primary key the index is the only one on entity_key"
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "no_pk_ek" in names and "feast_like_ek" not in names
    plan = db.execute("EXPLAIN QUERY PLAN SELECT value FROM feast_like WHERE entity_key = ?", (b"k",)).fetchall()
    assert "USING INDEX sqlite_autoindex_feast_like_1" in plan[0][3], "reads by entity key still use an index"


def test_two_workers_flushing_at_once_log_each_parked_event_once(tmp_path, monkeypatch):
    """The parked event-log rows belong to the host's state store, so every worker's flush
    sees all of them; two flushing at the same moment wrote them twice (the two-worker
    hand-over test caught it). Each append here waits for the other worker to arrive too."""
    import threading

    import streaming._pipeline as pipeline_module
    from features import read_events

    a, _, _ = _pipeline(tmp_path)
    b = Pipeline(kinds_by_topic={"c": "context", "s": "consent", "f": "feedback"},
                 state=StateStore(tmp_path / "state.db"), sink=FakeSink(), dead_letters=FakeDLQ(),
                 matcher=LexiconMatcher(), data_dir=tmp_path, clock=lambda: NOW / 1000 + 1)
    events = [pb.FeedbackEvent(event_id=f"fb{i}", event_time_ms=NOW - i, user_id="u1", type=pb.CLICK, item_id="cr1",
                               consent=pb.Consent(context=True, measurement=True)) for i in range(6)]
    a.process([Record("f", 0, i, m.SerializeToString()) for i, m in enumerate(events)])
    both_inside = threading.Barrier(2)
    real_append = pipeline_module.append_events

    def append_when_both_flush(*args, **kwargs):
        try:
            both_inside.wait(timeout=1.0)     # without the host lock both workers get here
        except threading.BrokenBarrierError:
            pass
        return real_append(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "append_events", append_when_both_flush)
    threads = [threading.Thread(target=w.flush) for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    logged = read_events(tmp_path, "feedback")["event_id"].to_list()
    assert sorted(logged) == sorted(m.event_id for m in events)
