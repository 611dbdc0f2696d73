"""The experiment store on a real PostgreSQL server, the reloading cache, and the CLI end to end."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner

from experiments import (
    ExperimentCache,
    ExperimentImmutable,
    ExperimentStore,
    ExposureLogger,
    LayerConflict,
    SyntheticWorld,
    assign_request,
    parse_experiment,
    synthetic_logs,
)

pytestmark = pytest.mark.integration

YAML = """
id: {id}
layer: ranking
description: XGBoost challenger vs the production ranker
buckets: [0, 10000]
planned_units: 6000
arms:
  - {{name: control, weight: 50, params: {{ranker: production}}}}
  - {{name: xgboost, weight: 50, params: {{ranker: xgboost, num_ads: 3}}}}
"""


def test_store_and_cache_on_postgres(postgres_url):
    store = ExperimentStore(postgres_url)
    try:
        exp = parse_experiment({"id": "pg1", "layer": "ranking", "buckets": [0, 5000],
                                "arms": [{"name": "control", "weight": 1}, {"name": "t", "weight": 1}]})
        store.create(exp)
        cache = ExperimentCache(store, refresh_s=0.05)
        assert cache.running() == ()
        store.start("pg1")
        time.sleep(0.06)
        running = cache.running()
        assert [e.id for e in running] == ["pg1"] and running[0].started_at is not None
        with pytest.raises(ExperimentImmutable, match="create a new experiment"):
            store.update(parse_experiment({**exp.definition(), "salt": "other"}))
        store.create(parse_experiment({**exp.definition(), "id": "pg2", "buckets": [4000, 10000]}))
        with pytest.raises(LayerConflict):
            store.start("pg2")
        # serving's path: many threads read the cache, assign and log exposures once per unit
        sent = []
        logger = ExposureLogger(sent.append)

        def serve(worker: int) -> None:
            for i in range(300):
                exps = cache.running()
                arms = assign_request(exps, user_id=f"u{i % 100}", request_id=f"r{worker}-{i}", personalization=True)
                logger.log(arms, user_id=f"u{i % 100}", request_id=f"r{worker}-{i}")

        threads = [threading.Thread(target=serve, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        in_exp = {e.unit_id for e in sent}
        assert len(sent) == len(in_exp) and 30 < len(in_exp) < 70   # ~half of 100 users in buckets [0, 5000)
        store.stop("pg1")
        time.sleep(0.06)
        assert cache.running() == ()
    finally:
        store.close()


def test_cli_create_start_report(tmp_path, make_settings, monkeypatch):
    from features import append_events
    from sightline.cli import main

    settings = make_settings()
    data_dir = settings.data_dir
    definition = tmp_path / "exp.yaml"
    definition.write_text(YAML.format(id="cli_exp"))
    runner = CliRunner()
    env = {"SIGHTLINE_DATA_DIR": str(data_dir)}

    def run(*args):
        res = runner.invoke(main, ["--data-dir", str(data_dir), "experiments", *args], env=env, catch_exceptions=False)
        return res

    res = run("create", str(definition))
    assert res.exit_code == 0, res.output
    assert "created experiment cli_exp (draft" in res.output
    assert run("create", str(definition)).exit_code != 0
    assert run("start", "cli_exp").exit_code == 0
    listing = run("list")
    assert "cli_exp" in listing.output and "running" in listing.output
    shown = json.loads(run("show", "cli_exp", "--format", "json").output)
    assert shown["status"] == "running" and shown["arms"][1]["params"]["ranker"] == "xgboost"
    bad = tmp_path / "bad.yaml"
    bad.write_text(YAML.format(id="cli_exp").replace("weight: 50, params: {ranker: xgboost", "weight: 40, params: {ranker: xgboost"))
    res = run("update", str(bad))
    assert res.exit_code != 0 and "create a new experiment" in res.output
    assert "golden cases ok" in run("check").output
    # event logs as the streaming stage writes them
    from experiments import ExperimentStore

    exp = ExperimentStore.from_settings(settings).get("cli_exp")
    ex, fb = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "xgboost": 0.065}, units=2000,
                                                start=exp.started_at), seed=3)
    append_events(data_dir, "exposures", ex)
    append_events(data_dir, "feedback", fb)
    res = run("report", "cli_exp")
    assert res.exit_code == 0, res.output
    assert "decision:" in res.output and "SRM check" in res.output
    doc = json.loads(run("report", "cli_exp", "--format", "json").output)
    assert sum(a["units"] for a in doc["arms"]) == 2000 and doc["decision"]["verdict"]
    csv_text = run("report", "cli_exp", "--format", "csv", "--correction", "bh").output
    assert csv_text.startswith("kind,experiment_id")
    out = tmp_path / "r.html"
    res = run("report", "cli_exp", "--format", "html", "-o", str(out), "--looks", "6")
    assert res.exit_code == 0 and out.exists() and "Decision:" in out.read_text()
    assert run("stop", "cli_exp").exit_code == 0
    assert "stopped" in run("show", "cli_exp").output
    assert run("report", "nope").exit_code != 0
