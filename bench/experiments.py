"""Validate the experiment analysis on simulated traffic: A/A calibration, A/B power, SRM.

Traffic comes from the project's world simulator (``simulation``: users with latent
preferences, contexts, ads and the ground-truth click model): one world and one 14-day
log of ad impressions with their true click probabilities. The first 7 days are the
pre-period (CUPED covariates); the last 7 are the experiment. Every replicate
re-assigns the users with a fresh salt through the production hash (``experiments.assign``)
and redraws the clicks of the experiment window from the ground truth — multiplied by
(1 + lift) for the treatment in A/B runs — then runs the production ``analyze`` on
exposure and feedback frames in the event-log schemas.

Figures: A/A false-positive rate at alpha = 0.05 (CTR, the primary metric); A/B power
observed vs the power the analysis' own power calculation predicts for the true lift;
the share of broken 52/48 splits flagged by the SRM check; and, on a subset, the
false-positive rate of peeking at every look with the fixed interval vs the
always-valid confidence sequence.

Usage: python -m bench.experiments [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np

from bench._common import emit, median, progress

WORLD = dict(n_users=30_000, n_products=5_000, n_advertisers=100, n_campaigns=300, n_creatives=900)
N_REQUESTS = 150_000
DAYS = 14.0
LIFT = 0.10            # headline lift (power ~0.85 on this traffic); the full run also checks +5% (power ~0.35)
EXP_ID = "bench_ab"


@dataclass
class Traffic:
    pre: object                # feedback frame (untagged, pre-period)
    base: object               # impression rows of the experiment window (feedback schema)
    p_click: np.ndarray
    p_conv: np.ndarray
    user_idx: np.ndarray       # per impression row: index into users
    users: list[str]
    exposures: object          # one row per user: first request in the window (schema minus arm)
    true_ctr: float


def build_traffic(seed: int = 11) -> Traffic:
    import polars as pl

    from experiments._synthetic import _schema_frame
    from simulation import WorldConfig, build_world, simulate_logged_impressions

    world = build_world(WorldConfig(seed=seed, **WORLD))
    log = simulate_logged_impressions(world, N_REQUESTS, seed=seed, days=DAYS, n_ads=2, n_suggestions=0)
    start = log["event_time"].min() + (log["event_time"].max() - log["event_time"].min()) / 2
    common = ["event_id", "event_time", "user_id", "request_id", "item_kind", "item_id", "campaign_id",
              "advertiser_id", "category", "position"]

    def feedback_rows(df, clicks: np.ndarray, convs: np.ndarray, arms_json):
        imp = df.select(common).with_columns(type=pl.lit("impression"), spend=pl.lit(0.002),
                                             experiment_arms=arms_json)
        click = df.filter(pl.Series(clicks)).select(common).with_columns(
            type=pl.lit("click"), spend=pl.lit(0.5), event_time=pl.col("event_time") + pl.duration(seconds=5),
            experiment_arms=arms_json if isinstance(arms_json, pl.Expr) else arms_json.filter(pl.Series(clicks)))
        conv = df.filter(pl.Series(convs)).select(common).with_columns(
            type=pl.lit("conversion"), spend=pl.lit(0.0), event_time=pl.col("event_time") + pl.duration(minutes=5),
            experiment_arms=arms_json if isinstance(arms_json, pl.Expr) else arms_json.filter(pl.Series(convs)))
        return pl.concat([imp, click, conv])

    pre_df = log.filter(pl.col("event_time") < start)
    pre = _schema_frame("feedback", feedback_rows(pre_df, pre_df["click"].to_numpy(), pre_df["conversion"].to_numpy(),
                                                  pl.lit("{}")).to_dict())
    window = log.filter(pl.col("event_time") >= start)
    users, user_idx = np.unique(window["user_id"].to_numpy().astype(str), return_inverse=True)
    base = window.select(common).with_columns(type=pl.lit("impression"), spend=pl.lit(0.002))
    firsts = (window.sort("event_time").group_by("user_id", maintain_order=True)
              .agg(pl.col("event_time").first(), pl.col("request_id").first()).sort("user_id"))
    exposures = firsts.with_columns(event_id=pl.format("x-{}", pl.col("user_id")), experiment_id=pl.lit(EXP_ID),
                                    layer=pl.lit("bench"), unit_type=pl.lit("user"), unit_id=pl.col("user_id"))
    return Traffic(pre, base, window["p_click"].to_numpy(), window["p_conversion_given_click"].to_numpy(),
                   user_idx, users.tolist(), exposures, float(window["p_click"].mean()))


def replicate(traffic: Traffic, salt: str, lift: float, seed: int, actual_weights=None, timeline: int = 0):
    """One simulated experiment through the production assignment and analysis."""
    import polars as pl

    from experiments import AnalysisOptions, analyze, choose_arm, parse_experiment
    from experiments._synthetic import _schema_frame

    exp = parse_experiment({"id": EXP_ID, "layer": "bench", "salt": salt, "status": "stopped",
                            "arms": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]})
    split = exp if actual_weights is None else parse_experiment(
        {**exp.definition(), "arms": [{"name": "control", "weight": actual_weights[0]},
                                      {"name": "treatment", "weight": actual_weights[1]}]})
    arm_of_user = np.array([choose_arm(split, u) for u in traffic.users])
    treat_user = arm_of_user == "treatment"
    treat = treat_user[traffic.user_idx]
    rng = np.random.default_rng(seed)
    clicks = rng.random(len(treat)) < traffic.p_click * np.where(treat, 1 + lift, 1.0)
    convs = clicks & (rng.random(len(treat)) < traffic.p_conv)
    arms_json = pl.Series(np.where(treat, f'{{"{EXP_ID}": "treatment"}}', f'{{"{EXP_ID}": "control"}}'))
    imp = traffic.base.with_columns(experiment_arms=arms_json)
    click = imp.filter(pl.Series(clicks)).with_columns(
        type=pl.lit("click"), spend=pl.lit(0.5), event_time=pl.col("event_time") + pl.duration(seconds=5))
    conv = imp.filter(pl.Series(convs)).with_columns(
        type=pl.lit("conversion"), spend=pl.lit(0.0), event_time=pl.col("event_time") + pl.duration(minutes=5))
    window = _schema_frame("feedback", pl.concat([imp, click, conv]).to_dict())
    feedback = pl.concat([traffic.pre, window])
    exposures = _schema_frame("exposures", traffic.exposures.with_columns(arm=pl.Series(arm_of_user)).to_dict())
    return analyze(exp, exposures, feedback, options=AnalysisOptions(timeline_points=timeline))


def run(quick: bool) -> dict:
    from tqdm import tqdm

    from experiments import _stats

    n_aa, n_ab, n_ab5, n_srm, n_peek = (40, 30, 0, 3, 6) if quick else (200, 200, 200, 20, 30)
    t0 = time.time()
    progress(f"simulating the world and {N_REQUESTS} requests over {DAYS:.0f} days ...")
    traffic = build_traffic()
    progress(f"traffic ready in {time.time() - t0:.1f}s: {len(traffic.users)} users in the experiment window, "
             f"{len(traffic.p_click)} ad impressions, true CTR {traffic.true_ctr:.4f}")
    timings, aa_p, aa_seq_p, aa_srm, aa_cuped = [], [], [], [], []
    for i in tqdm(range(n_aa), desc="A/A", file=__import__("sys").stderr):
        t = time.perf_counter()
        res = replicate(traffic, f"aa-{i}", 0.0, seed=i)
        timings.append(time.perf_counter() - t)
        m = res.metric("ctr")
        aa_p.append(m.lift.p_value)
        aa_seq_p.append(m.lift.seq_p_value)
        aa_srm.append(res.srm.flagged)
        aa_cuped.append(m.lift.variance_reduction)
    ab_hit, ab_pred, ab_rel = [], [], []
    true_abs = LIFT * traffic.true_ctr
    for i in tqdm(range(n_ab), desc="A/B", file=__import__("sys").stderr):
        res = replicate(traffic, f"ab-{i}", LIFT, seed=10_000 + i)
        m = res.metric("ctr")
        ab_hit.append(m.lift.p_value < 0.05)
        ab_pred.append(_stats.power(true_abs, m.lift.se, 0.05))
        ab_rel.append(m.lift.rel_lift)
    ab5_hit, ab5_pred = [], []
    for i in tqdm(range(n_ab5), desc="A/B +5%", file=__import__("sys").stderr):
        res = replicate(traffic, f"ab5-{i}", 0.05, seed=40_000 + i)
        m = res.metric("ctr")
        ab5_hit.append(m.lift.p_value < 0.05)
        ab5_pred.append(_stats.power(0.05 * traffic.true_ctr, m.lift.se, 0.05))
    srm = [replicate(traffic, f"srm-{i}", 0.0, seed=20_000 + i, actual_weights=(52, 48)).srm
           for i in tqdm(range(n_srm), desc="52/48", file=__import__("sys").stderr)]
    peek_fixed, peek_seq = [], []
    for i in tqdm(range(n_peek), desc="A/A peeking", file=__import__("sys").stderr):
        res = replicate(traffic, f"peek-{i}", 0.0, seed=30_000 + i, timeline=7)
        rows = res.timeline
        peek_fixed.append(any(r["ci_low"] > 0 or r["ci_high"] < 0 for r in rows))
        peek_seq.append(any(r["seq_low"] > 0 or r["seq_high"] < 0 for r in rows))
    aa_p = np.array(aa_p)
    return {
        "aa_false_positive_rate": float(np.mean(aa_p < 0.05)),
        "ab_power_observed": float(np.mean(ab_hit)),
        "ab_power_predicted": float(np.mean(ab_pred)),
        "srm_flags_broken_split": float(np.mean([s.flagged for s in srm])),
        "srm_broken_split_median_p": median([s.p_value for s in srm]),
        "srm_false_flag_rate_aa": float(np.mean(aa_srm)),
        "aa_runs": n_aa, "ab_runs": n_ab, "srm_runs": n_srm,
        "aa_p_value_ks_uniform_p": float(__import__("scipy.stats", fromlist=["kstest"]).kstest(aa_p, "uniform").pvalue),
        "aa_sequential_false_positive_rate": float(np.mean(np.array(aa_seq_p) < 0.05)),
        "peeking_runs": n_peek, "peeking_looks": 7,
        "peeking_fpr_fixed_ci": float(np.mean(peek_fixed)),
        "peeking_fpr_confidence_sequence": float(np.mean(peek_seq)),
        "ab_true_rel_lift": LIFT,
        "ab5_power_observed": float(np.mean(ab5_hit)) if ab5_hit else None,
        "ab5_power_predicted": float(np.mean(ab5_pred)) if ab5_pred else None,
        "ab5_runs": n_ab5,
        "ab_mean_rel_lift_observed": float(np.mean(ab_rel)),
        "true_ctr": traffic.true_ctr,
        "units_per_experiment": len(traffic.users),
        "ad_impressions_per_experiment": int(len(traffic.p_click)),
        "cuped_variance_reduction_median": median(aa_cuped),
        "analyze_s_median": median(timings),
        "traffic_source": "simulation (world simulator ground truth; clicks redrawn per replicate)",
        "wall_s": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer replicates (under a minute)")
    args = parser.parse_args(argv)
    figures = run(args.quick)
    ok = (0.02 <= figures["aa_false_positive_rate"] <= 0.08
          and abs(figures["ab_power_observed"] - figures["ab_power_predicted"]) <= 0.10
          and figures["srm_flags_broken_split"] >= 0.9)
    figures["goals_met"] = ok
    emit("experiments", figures, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
