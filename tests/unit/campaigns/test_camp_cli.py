"""`sightline campaigns ...` end to end on a SQLite store in tmp (click's CliRunner)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from sightline.cli import main


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, ["--data-dir", str(tmp_path / "data"), "campaigns", "--actor", "tester", *args],
                               catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return invoke


def test_cli_lifecycle(run, tmp_path):
    run("advertiser-add", "acme", "--name", "ACME Sports")
    out = run("create", "--id", "c1", "--advertiser", "acme", "--name", "Run", "--daily-budget", "50",
              "--lifetime-budget", "40", "--bid", "99", "--category", "health/pharmacy", "--headline", "Hi",
              "--landing-url", "http://shop.example", "--status", "active", ok=False)
    for fix in ("set budget.lifetime to at least 50.0", "lower it to at most 50.0", "may never be targeted",
                "use 'https://shop.example'"):
        assert fix in out
    run("create", "--id", "c1", "--advertiser", "acme", "--name", "Run", "--daily-budget", "50", "--bid", "0.5",
        "--category", "sports/running_shoes,sports/yoga", "--region", "DE", "--headline", "Run faster",
        "--landing-url", "https://shop.example/run", "--status", "active")
    assert "version 2" in run("update", "c1", "--set", "budget.daily=80", "--set", "targeting.devices=[glasses]")
    assert "now paused" in run("pause", "c1")
    out = run("list", "--status", "paused")
    assert "c1" in out and "1 campaign(s)" in out
    out = run("show", "c1", "--audit")
    assert "daily: 80.0" in out and "tester" in out and "~ budget.daily: 50.0 -> 80.0" in out
    assert "sports/running_shoes" in run("categories")
    assert "health/pharmacy" not in run("categories") and "health/pharmacy" in run("categories", "--all")

    path = tmp_path / "campaigns.yaml"
    run("export", "-o", str(path))
    assert "0 to create, 0 to update, 2 unchanged" in run("import", str(path))
    path.write_text(path.read_text().replace("daily: 80.0", "daily: 70.0"))
    out = run("import", str(path), "--dry-run")
    assert "~ budget.daily: 80.0 -> 70.0" in out and "dry run" in out
    assert "1 updated" in run("import", str(path))
    assert "0 to update" in run("import", str(path))
    assert "archived" in run("archive", "c1")
    assert "cannot become active" in run("resume", "c1", ok=False)


def test_cli_report_writes_csv_and_png(run, tmp_path):
    import pyarrow as pa

    from features import append_events, event_log_schema

    run("advertiser-add", "acme", "--name", "ACME")
    start = (datetime.now(timezone.utc) - timedelta(days=3)).strftime("%Y-%m-%d %H:%M:%S")
    run("create", "--id", "c1", "--advertiser", "acme", "--name", "Run", "--daily-budget", "10", "--bid", "0.5",
        "--start", start, "--headline", "Hi", "--landing-url", "https://shop.example", "--status", "active")
    schema = event_log_schema("feedback")
    t = datetime.now(timezone.utc) - timedelta(days=1)
    rows = []
    for i, kind in enumerate(["impression"] * 20 + ["click"] * 4):
        row = {n: None for n in schema.names}
        row.update(event_id=f"e{i}", event_time=t, type=kind, campaign_id="c1", spend=0.5 if kind == "click" else 0.0)
        rows.append(row)
    append_events(tmp_path / "data", "feedback", pa.Table.from_pylist(rows, schema=schema))
    out = run("report", "--csv", str(tmp_path / "r.csv"), "--png", str(tmp_path / "r.png"))
    assert "20.00%" in out and "TOTAL" in out            # CTR 4/20
    assert (tmp_path / "r.csv").read_text().startswith("campaign_id,day,impressions")
    assert (tmp_path / "r.png").stat().st_size > 5000
