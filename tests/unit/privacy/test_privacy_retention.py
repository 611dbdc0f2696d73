"""Retention purge over offline feature parts and event logs: old rows go, new rows stay."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq

from privacy import Tombstones, purge_expired


def _frame(view, ids, ts):
    import pyarrow as pa

    from features import TIMESTAMP_FIELD, arrow_schema

    schema = arrow_schema(view)
    rows = [{f.name: None for f in schema} | {view.entity: i, TIMESTAMP_FIELD: ts} for i in ids]
    return pa.Table.from_pylist(rows, schema=schema)


def _seed(settings, now):
    from features import VIEWS, append_events, event_log_schema, write_offline

    old, new = now - timedelta(days=31), now - timedelta(days=29)
    for view in VIEWS:
        write_offline(settings.feast_dir, view.name, _frame(view, ["a", "b"], old))            # all old
        write_offline(settings.feast_dir, view.name, _mixed(view, old, new))                    # mixed
        write_offline(settings.feast_dir, view.name, _frame(view, ["e"], new))                  # all new
    import pyarrow as pa

    fb = event_log_schema("feedback")
    rows = [{f.name: None for f in fb} | {"event_id": f"e{i}", "event_time": t, "user_id": "u"}
            for i, t in enumerate([old, old, new])]
    append_events(settings.data_dir, "feedback", pa.Table.from_pylist(rows, schema=fb))
    ex = event_log_schema("exposures")
    append_events(settings.data_dir, "exposures", pa.Table.from_pylist(
        [{f.name: None for f in ex} | {"event_id": "x1", "event_time": old, "user_id": "u", "experiment_id": "e"}],
        schema=ex))


def _mixed(view, old, new):
    import pyarrow as pa

    return pa.concat_tables([_frame(view, ["c"], old), _frame(view, ["d"], new)])


def _rows(directory, column):
    out = []
    for part in sorted(directory.glob("part-*.parquet")):
        out += pq.read_table(part, columns=[column]).column(0).to_pylist()
    return out


def test_purge_removes_rows_older_than_retention_and_keeps_newer(make_settings):
    from features import TIMESTAMP_FIELD, VIEWS, event_log_dir, offline_dir, read_events

    s = make_settings()
    now = datetime.now(timezone.utc)
    _seed(s, now)
    dry = purge_expired(s, dry_run=True)
    assert dry.rows_removed == len(VIEWS) * 3 + 2 + 1
    assert len(_rows(offline_dir(s.feast_dir, VIEWS[0].name), VIEWS[0].entity)) == 5, "dry run changes nothing"

    report = purge_expired(s)
    assert report.rows_removed == dry.rows_removed and report.retention_days == 30
    cutoff = now - timedelta(days=30)
    for view in VIEWS:
        d = offline_dir(s.feast_dir, view.name)
        assert sorted(_rows(d, view.entity)) == ["d", "e"]
        assert all(t >= cutoff for t in _rows(d, TIMESTAMP_FIELD))
        assert len(list(d.glob("part-*.parquet"))) == 2, "the all-old part is deleted, the mixed one rewritten"
        assert not list(d.glob(".*tmp")), "no temporary files left behind"
    assert read_events(s.data_dir, "feedback")["event_id"].to_list() == ["e2"]
    assert read_events(s.data_dir, "exposures").height == 0
    assert not list(event_log_dir(s.data_dir, "exposures").glob("part-*.parquet"))
    assert purge_expired(s).rows_removed == 0, "a second purge has nothing left to do"


def test_retention_days_setting_and_tombstone_horizon(make_settings):
    s = make_settings(privacy={"retention_days": 7}, kafka={"retention_hours": 24 * 7})
    now = datetime.now(timezone.utc)
    _seed(s, now)
    t = Tombstones(s)
    now_ms = int(now.timestamp() * 1000)
    t.add(["ancient"], erased_at_ms=now_ms - 9 * 86_400_000)
    t.add(["recent"], erased_at_ms=now_ms - 2 * 86_400_000)
    report = purge_expired(s, now_ms=now_ms)
    from features import VIEWS, offline_dir

    assert sorted(_rows(offline_dir(s.feast_dir, VIEWS[0].name), VIEWS[0].entity)) == [], "29 days is older than 7"
    assert report.tombstones_pruned == 1 and set(t.snapshot()) == {"recent"}


def test_purge_cli_reports_json(make_settings):
    from click.testing import CliRunner

    from sightline.cli import main

    s = make_settings()
    _seed(s, datetime.now(timezone.utc))
    result = CliRunner().invoke(main, ["--data-dir", str(s.data_dir), "privacy", "purge", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["rows_removed"] > 0
