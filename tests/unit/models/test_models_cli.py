"""`sightline train` / `sightline models` through click (popularity model: no torch, seconds)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sightline.cli import main


def test_train_list_promote_show(tmp_path):
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]
    res = runner.invoke(main, base + ["train", "--model", "popularity", "--source", "simulate", "--requests", "3000"])
    assert res.exit_code == 0, res.output
    version = res.output.split("registered ")[1].split()[0]
    res = runner.invoke(main, base + ["models", "list"])
    assert res.exit_code == 0 and "candidate" in res.output, res.output
    res = runner.invoke(main, base + ["models", "promote", version])
    assert res.exit_code == 0 and f"production -> {version}" in res.output
    res = runner.invoke(main, base + ["models", "show", "production"])
    meta = json.loads(res.output)
    assert meta["version"] == version and meta["feature_source"] == "polars" and meta["source"] == "simulate"
    assert meta["metrics"]["bayes"]["auc"] > meta["metrics"]["auc"] - 0.05
    res = runner.invoke(main, base + ["models", "show", "nope"])
    assert res.exit_code != 0 and "sightline models list" in res.output
