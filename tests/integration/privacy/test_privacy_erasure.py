"""Erasure against the real stores: Feast SQLite online + parquet offline, event logs,
tombstone, receipt; then every store is searched for the user."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from privacy import Tombstones, entity_key_bytes, erase_user, receipts_path

pytestmark = pytest.mark.integration


def _online(store, view, entity, ids):
    feats = [f"{view.name}:{n}" for n in view.feature_names]
    return store.get_online_features(features=feats, entity_rows=[{entity: i} for i in ids]).to_dict()


def _offline_ids(settings, view):
    import pyarrow.parquet as pq

    from features import offline_dir

    ids = []
    for part in sorted(offline_dir(settings.feast_dir, view.name).glob("part-*.parquet")):
        ids += pq.read_table(part, columns=[view.entity]).column(0).to_pylist()
    return ids


def _files_containing(root: Path, needle: bytes, skip=()) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.name not in skip and needle in p.read_bytes())


def test_entity_key_layout_matches_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for uid in ("u1", "ünïcode-🙂", "x" * 200):
        want = serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=uid)]),
                                    entity_key_serialization_version=3)
        assert entity_key_bytes("user_id", uid) == want


def test_erase_user_removes_the_user_from_every_store_and_keeps_others(populated):
    from features import VIEWS, read_events

    s, store, victim, bystander = populated.settings, populated.store, populated.victim, populated.bystander
    user_views = [v for v in VIEWS if v.user_keyed]
    before = {v.name: _offline_ids(s, v) for v in user_views}
    assert all(victim in ids for ids in before.values())
    assert victim.encode() in (s.feast_dir / "online.db").read_bytes()

    start = time.perf_counter()
    receipt = erase_user(s, populated.victim_app_id, requested_by="test")
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"erasure of one user took {elapsed:.2f} s"

    # receipt: counts per store
    assert receipt.user_pseudonym == victim and receipt.tombstoned
    assert receipt.deleted("feast_online_sqlite") == populated.online_rows_per_user
    assert receipt.deleted("feast_offline") == 2 * len(user_views)
    assert receipt.deleted("event_log_feedback") == 3
    assert receipt.deleted("event_log_exposures") == 2
    assert populated.victim_app_id not in receipt.to_json()
    logged = [json.loads(line) for line in receipts_path(s.data_dir).read_text().splitlines()]
    assert logged[-1]["receipt_id"] == receipt.receipt_id and logged[-1]["total_deleted"] == receipt.total_deleted

    # online store: victim gone (all values None), bystander intact
    for view in user_views:
        got = _online(store, view, view.entity, [victim, bystander])
        for name in view.feature_names:
            assert got[name][0] is None, f"{view.name}.{name} still served for the erased user"
            assert got[name][1] is not None, f"{view.name}.{name} lost for the bystander"
    # non-user views untouched
    item = next(v for v in VIEWS if not v.user_keyed)
    assert _online(store, item, item.entity, ["item-or-campaign-1"])[item.feature_names[0]][0] is not None

    # offline parts: victim rows gone, bystander rows kept, files still readable
    for view in user_views:
        ids = _offline_ids(s, view)
        assert victim not in ids and ids.count(bystander) == before[view.name].count(bystander)
    # event logs
    fb, ex = read_events(s.data_dir, "feedback"), read_events(s.data_dir, "exposures")
    assert victim not in fb["user_id"].to_list() and bystander in fb["user_id"].to_list()
    assert victim not in ex["user_id"].to_list() and victim not in ex["unit_id"].to_list()
    assert bystander in ex["user_id"].to_list()

    # raw bytes: no file under the data dir holds the pseudonym except the tombstone and receipts
    assert _files_containing(s.data_dir, victim.encode(), skip={"tombstones.tsv", "receipts.jsonl"}) == []
    assert _files_containing(s.data_dir, populated.victim_app_id.encode()) == []

    # tombstone: late events of the user are dropped, newer ones kept
    t = Tombstones(s)
    assert t.contains(victim) and not t.contains(bystander)
    assert t.drops(victim, receipt.erased_at_ms - 60_000) and not t.drops(victim, receipt.erased_at_ms + 1)


def test_erasure_is_idempotent_and_counts_zero_the_second_time(populated):
    erase_user(populated.settings, populated.victim_app_id)
    again = erase_user(populated.settings, populated.victim_app_id)
    assert again.total_deleted == 0 and again.tombstoned


def test_erasure_by_pseudonym_and_under_the_previous_key(populated):
    s = populated.settings
    rotated = s.model_copy(update={"privacy": s.privacy.model_copy(
        update={"hmac_key": "the-new-key", "previous_hmac_key": s.privacy.hmac_key})})
    receipt = erase_user(rotated, populated.victim_app_id)
    assert receipt.total_deleted > 0, "data stored under the previous key must be found during the rotation window"
    assert Tombstones(s).contains(populated.victim)
    by_pseudonym = erase_user(s, populated.bystander, pseudonymous=True)
    assert by_pseudonym.user_pseudonym == populated.bystander and by_pseudonym.deleted("event_log_feedback") == 1


def test_erase_cli_prints_a_receipt(populated):
    from click.testing import CliRunner

    from sightline.cli import main

    result = CliRunner().invoke(main, ["--data-dir", str(populated.settings.data_dir), "privacy", "erase",
                                       "--user", populated.victim_app_id, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    receipt = json.loads(result.output.strip().splitlines()[-1])
    assert receipt["user_pseudonym"] == populated.victim and receipt["total_deleted"] > 0
    bad = CliRunner().invoke(main, ["--data-dir", str(populated.settings.data_dir), "privacy", "erase", "--user", " "])
    assert bad.exit_code != 0 and "empty" in bad.output


def test_a_failing_store_is_reported_and_the_others_are_still_erased(populated):
    from privacy import StoreUnavailable

    def broken(ids):
        raise ConnectionError("cache cluster down")

    with pytest.raises(StoreUnavailable, match="cache cluster down") as info:
        erase_user(populated.settings, populated.victim_app_id, erasers={"remote_cache": broken})
    assert "run the erasure again" in str(info.value)
    assert Tombstones(populated.settings).contains(populated.victim)
    last = json.loads(receipts_path(populated.settings.data_dir).read_text().splitlines()[-1])
    assert last["total_deleted"] > 0 and any("FAILED" in s["detail"] for s in last["stores"])
    again = erase_user(populated.settings, populated.victim_app_id)
    assert again.total_deleted == 0, "the first attempt already cleaned every healthy store"
