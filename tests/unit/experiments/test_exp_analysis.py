"""Analysis over event-log frames: attribution, figures vs independent computations, decisions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from scipy import stats

from experiments import AnalysisError, AnalysisOptions, SyntheticWorld, analyze, parse_experiment, synthetic_logs
from experiments import _stats
from experiments._analysis import unit_table
from experiments._report import render_html, render_terminal, to_csv, to_json
from features import event_log_schema

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
NO_TIMELINE = AnalysisOptions(timeline_points=0)


def _exp(**kw):
    base = {"id": "ab", "layer": "l", "status": "stopped",
            "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]}
    base.update(kw)
    return parse_experiment(base)


def _frame(kind: str, rows: list[dict]) -> pl.DataFrame:
    schema = pl.from_arrow(event_log_schema(kind).empty_table()).schema
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def _fb(user, req, typ, arm, minutes=10, spend=0.0, item_kind="ad", exp_id="ab"):
    return {"event_id": f"{user}{req}{typ}{minutes}", "event_time": T0 + timedelta(minutes=minutes), "user_id": user,
            "request_id": req, "type": typ, "item_kind": item_kind, "spend": spend,
            "experiment_arms": json.dumps({exp_id: arm} if arm else {})}


def test_unit_table_attributes_feedback_to_units():
    exposures = _frame("exposures", [
        {"event_time": T0, "user_id": "u1", "experiment_id": "ab", "arm": "control", "unit_type": "user",
         "unit_id": "u1", "request_id": "r1"},
        {"event_time": T0, "user_id": "anon", "experiment_id": "ab", "arm": "treatment", "unit_type": "request",
         "unit_id": "r9", "request_id": "r9"},
        {"event_time": T0, "user_id": "u3", "experiment_id": "other", "arm": "x", "unit_type": "user",
         "unit_id": "u3", "request_id": "r3"},
    ])
    feedback = _frame("feedback", [
        _fb("u1", "r1", "impression", "control", spend=0.002), _fb("u1", "r1", "click", "control", spend=0.5),
        _fb("u1", "r2", "impression", "control"), _fb("u1", "r2", "impression", "control", item_kind="product"),
        _fb("u1", "r2", "click", "treatment"),          # tagged with another arm than the unit's
        _fb("anon", "r9", "impression", "treatment"), _fb("anon", "r9", "click", "treatment"),
        _fb("anon", "r9", "conversion", "treatment"),
        _fb("u7", "r7", "impression", "control"),       # tagged, but no exposure: orphan
        _fb("u1", "r5", "impression", None),            # not in this experiment
    ])
    table, quality = unit_table(_exp(), exposures, feedback)
    rows = {r["unit_id"]: r for r in table.to_dicts()}
    assert set(rows) == {"u1", "r9"}
    u1, r9 = rows["u1"], rows["r9"]
    assert (u1["arm"], u1["requests"], u1["impressions"], u1["clicks"], u1["ad_impressions"], u1["filled_requests"]) == (
        "control", 2, 3, 2, 2, 2)
    assert u1["revenue"] == pytest.approx(0.502)
    assert (r9["arm"], r9["unit_type"], r9["requests"], r9["clicks"], r9["conversions"]) == ("treatment", "request", 1, 1, 1)
    assert quality["orphan_feedback_rows"] == 1 and quality["feedback_arm_mismatches"] == 1
    ads_only, _ = unit_table(_exp(), exposures, feedback, item_kind="ad")
    assert ads_only.filter(pl.col("unit_id") == "u1")["impressions"].item() == 2


def test_no_exposures_is_a_clear_error():
    empty = pl.from_arrow(event_log_schema("exposures").empty_table())
    fb = pl.from_arrow(event_log_schema("feedback").empty_table())
    with pytest.raises(AnalysisError, match="no exposures") as info:
        analyze(_exp(), empty, fb)
    assert info.value.code == "FAILED_PRECONDITION"


@pytest.fixture(scope="module")
def logs():
    exp = _exp()
    ex, fb = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.07}, units=3000,
                                                request_unit_share=0.1), seed=42)
    return exp, ex, fb


def test_figures_match_an_independent_computation(logs):
    exp, ex, fb = logs
    res = analyze(exp, ex, fb, options=AnalysisOptions(timeline_points=0, cuped=False))
    # per-arm totals straight from the logs (every unit here is an exposed unit)
    tagged = fb.filter(pl.col("experiment_arms") != "{}").with_columns(
        arm=pl.col("experiment_arms").str.json_path_match("$.ab"))
    for arm in res.arms:
        sub = tagged.filter(pl.col("arm") == arm.arm)
        assert arm.impressions == sub.filter(pl.col("type") == "impression").height
        assert arm.clicks == sub.filter(pl.col("type") == "click").height
        assert arm.revenue == pytest.approx(sub["spend"].sum())
        assert arm.units == ex.filter(pl.col("arm") == arm.arm).height
    # CTR lift: delta method on per-unit sums, checked with scipy's Welch test on the linearised values
    table, _ = unit_table(exp, ex, fb)
    arrays = {}
    for arm in ("control", "treatment"):
        sub = table.filter(pl.col("arm") == arm)
        y, x = sub["clicks"].to_numpy().astype(float), sub["impressions"].to_numpy().astype(float)
        r = y.sum() / x.sum()
        arrays[arm] = r + (y - r * x) / x.mean()
    ref = stats.ttest_ind(arrays["treatment"], arrays["control"], equal_var=False)
    ctr = res.metric("ctr")
    assert ctr.lift.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ctr.lift.abs_lift == pytest.approx(arrays["treatment"].mean() - arrays["control"].mean())
    srm = stats.chisquare([a.units for a in res.arms])
    assert res.srm.p_value == pytest.approx(srm.pvalue)
    # Holm over the metric family, as statsmodels does it
    from statsmodels.stats.multitest import multipletests

    raw = [m.lift.p_value for m in res.metrics]
    assert [m.p_adjusted for m in res.metrics] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert res.data_quality["assignment"]["arm_mismatches"] == 0


def test_cuped_shrinks_the_interval_without_bias():
    exp = _exp()
    world = SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.05}, units=3000, heterogeneity_shape=0.7,
                           pre_requests_per_unit=12)
    ex, fb = synthetic_logs(exp, world, seed=9)
    with_cuped = analyze(exp, ex, fb, options=NO_TIMELINE).metric("clicks_per_unit")
    without = analyze(exp, ex, fb, options=AnalysisOptions(timeline_points=0, cuped=False)).metric("clicks_per_unit")
    assert with_cuped.cuped and with_cuped.lift.variance_reduction > 0.1
    assert with_cuped.lift.se < without.lift.se
    assert abs(with_cuped.lift.abs_lift - without.lift.abs_lift) < 2 * without.lift.se


def test_simulated_aa_false_positives_ab_power_and_srm():
    """Small version of bench.experiments: calibrated under A/A, power as predicted, SRM catches 52/48."""
    exp = _exp()
    aa = [analyze(exp, *synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.05}, units=1200),
                                       seed=s), options=NO_TIMELINE).metric("ctr").lift.p_value for s in range(60)]
    fpr = np.mean(np.array(aa) < 0.05)
    assert fpr <= 0.12
    assert np.mean(np.array(aa) < 0.5) == pytest.approx(0.5, abs=0.2)  # p-values roughly uniform
    hits, predicted = [], []
    for s in range(40):
        lift = analyze(exp, *synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.0625},
                                                                units=1200), seed=1000 + s),
                       options=NO_TIMELINE).metric("ctr").lift
        hits.append(lift.p_value < 0.05)
        predicted.append(_stats.power(0.0125, lift.se))
    assert abs(np.mean(hits) - np.mean(predicted)) < 0.2
    broken = SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.05}, units=20000, requests_per_unit=1.0,
                            pre_requests_per_unit=0, actual_weights={"control": 52, "treatment": 48})
    res = analyze(exp, *synthetic_logs(exp, broken, seed=7), options=NO_TIMELINE)
    assert res.srm.flagged and res.srm.p_value < 0.001
    assert res.decision.verdict == "don't ship" and "Sample ratio mismatch" in res.decision.reasons[0]


def test_decisions_in_plain_words(logs):
    exp, ex, fb = logs
    res = analyze(exp, ex, fb, options=NO_TIMELINE)
    assert res.decision.verdict == "ship" and res.decision.arm == "treatment"
    # the same data with the arms' roles swapped: the treatment loses
    swapped = _exp(control="treatment")
    res = analyze(swapped, ex, fb, options=NO_TIMELINE)
    assert res.decision.verdict == "don't ship" and "worse" in res.decision.headline
    # a tiny A/A: nothing significant, cannot detect 2% → keep running
    small = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.05}, units=300), seed=1)
    res = analyze(exp, *small, options=NO_TIMELINE)
    assert res.decision.verdict == "keep running" and any("more units" in r for r in res.decision.reasons)


def test_guardrail_breach_blocks_shipping():
    exp = _exp()
    ex, fb = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.08}, units=3000), seed=5)
    # drop a third of the treatment's filled requests' impressions: fill rate falls, CTR still wins
    drop = (fb.filter((pl.col("experiment_arms").str.contains("treatment")) & (pl.col("type") == "impression"))
              .select("request_id").unique().sample(fraction=0.3, seed=1))
    fb = fb.join(drop, on="request_id", how="anti")
    res = analyze(exp, ex, fb, options=NO_TIMELINE)
    fill = next(g for g in res.guardrails if g.guardrail == "fill_rate")
    assert fill.breached and "fell" in fill.reason
    assert res.decision.verdict == "don't ship"


def test_sequential_timeline_and_reports(logs):
    exp, ex, fb = logs
    running = _exp(status="running")
    res = analyze(running, ex, fb, options=AnalysisOptions(timeline_points=5))
    assert len(res.timeline) == 5
    units = [r["units"] for r in res.timeline]
    assert units == sorted(units) and units[-1] == ex.height
    last = res.timeline[-1]
    assert last["seq_low"] < last["ci_low"] <= last["abs_lift"] <= last["ci_high"] < last["seq_high"]
    doc = json.loads(to_json(res))
    assert doc["decision"]["verdict"] in ("ship", "don't ship", "keep running")
    assert doc["srm"]["flagged"] is False and len(doc["timeline"]) == 5
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(to_csv(res))))
    assert {r["kind"] for r in rows} == {"arm", "metric", "guardrail"}
    ctr_row = next(r for r in rows if r["kind"] == "metric" and r["metric"] == "ctr")
    assert float(ctr_row["p_value"]) == pytest.approx(res.metric("ctr").lift.p_value)
    page = render_html(res, golden_ok=True)
    assert page.startswith("<!DOCTYPE html>") and "Decision:" in page and page.count("data:image/png;base64,") == 3
    assert "<script" not in page and "http://" not in page and "https://" not in page
    from rich.console import Console

    console = Console(record=True, width=140)
    render_terminal(res, console)
    text = console.export_text()
    assert "decision:" in text and "SRM check" in text and "ctr" in text


def _with_serve_times(fb: pl.DataFrame, ms_by_arm: dict[str, float], seed: int = 0) -> pl.DataFrame:
    """Give every request's impressions one serve time, drawn per arm (as Recommend logs it)."""
    rng = np.random.default_rng(seed)
    reqs = fb.filter(pl.col("type") == "impression").select("request_id", "experiment_arms").unique("request_id")
    arm = reqs["experiment_arms"].str.json_path_match("$['ab']").to_list()
    ms = [float(rng.gamma(4.0, ms_by_arm[a or "control"] / 4.0)) for a in arm]   # the pre-period's too
    times = reqs.select("request_id").with_columns(pl.Series("t", ms, dtype=pl.Float64))
    return (fb.join(times, on="request_id", how="left")
              .with_columns(serve_ms=pl.when(pl.col("type") == "impression").then(pl.col("t")))
              .drop("t").select(fb.columns))


def test_latency_guardrail_reads_the_serve_times_of_the_feedback_log():
    """Recommend logs its serve time on impressions; the analysis takes each request once,
    reports p99 per arm and blocks an arm whose p99 rose more than the tolerance."""
    from experiments._analysis import LATENCY_MIN_REQUESTS, served_requests

    exp = _exp()
    ex, fb = synthetic_logs(exp, SyntheticWorld(arm_ctr={"control": 0.05, "treatment": 0.08}, units=3000), seed=5)
    assert analyze(exp, ex, fb, options=NO_TIMELINE).arms[0].latency_p99_ms is None, "no serve times: no figure"

    slow = _with_serve_times(fb, {"control": 4.0, "treatment": 6.0})
    reqs = served_requests(slow)
    assert reqs.height == slow.filter(pl.col("type") == "impression")["request_id"].n_unique(), "one row per request"
    res = analyze(exp, ex, slow, options=NO_TIMELINE)
    by_arm = {a.arm: a.latency_p99_ms for a in res.arms}
    for arm, mean in (("control", 4.0), ("treatment", 6.0)):
        rows = reqs.filter(pl.col("experiment_arms").str.contains(arm))["latency_ms"]
        assert by_arm[arm] == pytest.approx(rows.quantile(0.99, interpolation="linear"))
        assert by_arm[arm] > 2 * mean, "a p99, not a mean"
    latency = next(g for g in res.guardrails if g.guardrail == "latency_p99")
    assert latency.breached and "rose" in latency.reason and res.decision.verdict == "don't ship"

    same = analyze(exp, ex, _with_serve_times(fb, {"control": 4.0, "treatment": 4.0}, seed=1), options=NO_TIMELINE)
    assert not next(g for g in same.guardrails if g.guardrail == "latency_p99").breached

    # too few requests for a p99: the figure is left out rather than read off the slowest call
    few = reqs.head(LATENCY_MIN_REQUESTS - 1)
    assert all(a.latency_p99_ms is None for a in analyze(exp, ex, fb, options=NO_TIMELINE, requests=few).arms)
