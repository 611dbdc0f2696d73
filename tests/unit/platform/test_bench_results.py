"""Benchmark results: a quick run never replaces the full run the README quotes."""

import json

from bench import __main__ as bench_main
from bench._common import emit


def test_quick_run_writes_its_own_file_and_the_table_prefers_the_full_run(tmp_path, capsys):
    emit("train", {"torchrec_samples_per_s": 33000.0}, quick=False, results_dir=tmp_path)
    emit("train", {"torchrec_samples_per_s": 28000.0}, quick=True, results_dir=tmp_path)
    assert json.loads((tmp_path / "train.json").read_text())["torchrec_samples_per_s"] == 33000.0
    assert json.loads((tmp_path / "train.quick.json").read_text())["quick"] is True
    table = bench_main.render_table(tmp_path)
    train_row = next(r for r in table.splitlines() if r.startswith("| `train`"))
    assert "33,000" in train_row and "| False |" in train_row


def test_a_quick_run_stands_in_until_a_full_run_exists(tmp_path, capsys):
    emit("pacing", {"max_overspend_pct": 0.3}, quick=True, results_dir=tmp_path)
    row = next(r for r in bench_main.render_table(tmp_path).splitlines() if r.startswith("| `pacing`"))
    assert "max_overspend_pct = 0.3" in row and "| True |" in row
    assert "not run yet" in next(r for r in bench_main.render_table(tmp_path).splitlines() if r.startswith("| `serve`"))


def test_the_table_dates_a_result_by_its_measurement_not_its_file_time(tmp_path):
    import json
    import os

    from bench.__main__ import render_table

    (tmp_path / "serve.json").write_text(json.dumps({"p50_ms": 4.0, "quick": False, "measured_at": "2026-01-02 03:04"}))
    os.utime(tmp_path / "serve.json", (0, 0))      # a fresh clone's file time says nothing about the run
    row = next(r for r in render_table(tmp_path).splitlines() if "`serve`" in r)
    assert "2026-01-02 03:04 UTC" in row
