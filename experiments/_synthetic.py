"""A small synthetic generator of exposures + feedback with a known true CTR per arm.

For tests and ``bench.experiments`` when the full world simulator (``simulation/``) is
not what is being validated: it produces exactly the event-log schemas the analysis
reads, with per-unit heterogeneity (so CUPED has something to remove) and a
pre-period of untagged feedback. Units are assigned with the production hash; a
different ``actual_weights`` simulates a broken split (e.g. 52/48).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from experiments._assign import choose_arm
from experiments._definitions import Experiment, parse_experiment


@dataclass(frozen=True)
class SyntheticWorld:
    """Ground truth of one synthetic experiment."""

    arm_ctr: dict[str, float]                 # true CTR per arm
    units: int = 4000
    requests_per_unit: float = 3.0            # mean (1 + Poisson)
    ads_per_request: int = 2
    fill_rate: float = 0.9
    cvr: float = 0.1                          # conversions per click
    cpc: float = 0.5
    cpm: float = 2.0
    heterogeneity_shape: float = 2.0          # gamma shape of the per-unit CTR multiplier (inf = none)
    days: float = 7.0
    pre_period_days: float = 14.0
    pre_requests_per_unit: float = 3.0
    request_unit_share: float = 0.0           # share of units without personalization consent
    actual_weights: dict[str, float] | None = None  # the split serving really used (None = as defined)
    start: datetime = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _schema_frame(kind: str, columns: dict):
    import polars as pl

    from features import event_log_schema

    schema = pl.from_arrow(event_log_schema(kind).empty_table()).schema
    df = pl.DataFrame(columns)
    return df.select([
        (pl.col(name) if name in df.columns else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in schema.items()
    ])


def synthetic_logs(experiment: Experiment, world: SyntheticWorld, seed: int = 0):
    """``(exposures, feedback)`` polars frames for one experiment under ``world``."""
    import polars as pl

    rng = np.random.default_rng(seed)
    n = world.units
    split_exp = experiment
    if world.actual_weights:
        split_exp = parse_experiment({**experiment.definition(), "arms": [
            {"name": a.name, "weight": world.actual_weights[a.name]} for a in experiment.arms]})
    ids = [f"s{seed}-{i}" for i in range(n)]
    all_idx = np.arange(n)
    is_request_unit = rng.random(n) < world.request_unit_share
    # a request unit (no personalization consent) is one request: serving hashes its request id
    req_counts = np.where(is_request_unit, 1, 1 + rng.poisson(world.requests_per_unit - 1, n))
    first_req = np.concatenate([[0], np.cumsum(req_counts)[:-1]])
    first_req_ids = np.char.add(np.char.add(f"r{seed}-", all_idx.astype(str)), np.char.add("-", first_req.astype(str)))
    unit_ids = np.where(is_request_unit, first_req_ids, np.array(ids))
    arms = np.array([choose_arm(split_exp, u) for u in unit_ids.tolist()])
    ctr = np.array([world.arm_ctr[a] for a in arms])
    if np.isfinite(world.heterogeneity_shape):
        mult = rng.gamma(world.heterogeneity_shape, 1 / world.heterogeneity_shape, n)
    else:
        mult = np.ones(n)
    base_ctr = world.arm_ctr[experiment.control]
    t0 = rng.random(n) * world.days * 0.8
    day_us = 86_400_000_000
    start_us = int(world.start.timestamp() * 1_000_000)

    def feedback_rows(unit_idx, req_counts, times_from, times_span, p_click, tagged, req_prefix):
        n_req = req_counts
        req_unit = np.repeat(unit_idx, n_req)
        offs = np.concatenate([[0], np.cumsum(n_req)[:-1]]) if len(n_req) else np.zeros(0, int)
        req_seq = np.arange(len(req_unit)) - np.repeat(offs, n_req)
        req_time = times_from[req_unit] + np.where(req_seq == 0, 0.0, rng.random(len(req_unit)) * times_span[req_unit])
        filled = rng.random(len(req_unit)) < world.fill_rate
        n_imp = np.where(filled, world.ads_per_request, 0)
        imp_req = np.repeat(np.arange(len(req_unit)), n_imp)
        imp_unit = req_unit[imp_req]
        clicked = rng.random(len(imp_req)) < np.minimum(p_click[imp_unit], 0.99)
        click_req = imp_req[clicked]
        converted = rng.random(len(click_req)) < world.cvr
        conv_req = click_req[converted]
        rows_req = np.concatenate([imp_req, click_req, conv_req])
        types = np.array(["impression"] * len(imp_req) + ["click"] * len(click_req) + ["conversion"] * len(conv_req))
        spend = np.concatenate([np.full(len(imp_req), world.cpm / 1000), np.full(len(click_req), world.cpc),
                                np.zeros(len(conv_req))])
        unit_of_row = req_unit[rows_req]
        time_us = start_us + (req_time[rows_req] * day_us).astype(np.int64) + (types != "impression") * 1_000_000
        return {
            "unit": unit_of_row, "req": rows_req, "type": types, "spend": spend, "time": time_us,
            "tagged": tagged, "prefix": req_prefix, "req_unit": req_unit, "req_time": req_time,
        }

    span = np.maximum(world.days - t0, 0.01)
    main = feedback_rows(all_idx, req_counts, t0, span, ctr * mult, True, "r")
    # pre-period: users with consent only, untagged, before the start, control CTR
    users = all_idx[~is_request_unit]
    pre_counts = rng.poisson(world.pre_requests_per_unit, len(users))
    keep = pre_counts > 0
    users, pre_counts = users[keep], pre_counts[keep]
    pre_from = np.full(n, -world.pre_period_days)
    pre_span = np.full(n, world.pre_period_days * 0.99)
    pre = feedback_rows(users, pre_counts, pre_from, pre_span, base_ctr * mult, False, "p")

    id_arr = np.array(ids)
    exp_id = experiment.id

    def frame(part, tagged: bool):
        req_global = part["req"]
        unit = part["unit"]
        req_ids = np.char.add(np.char.add(f"{part['prefix']}{seed}-", unit.astype(str)),
                              np.char.add("-", req_global.astype(str)))
        d = pl.DataFrame({
            "event_time": part["time"], "user_id": id_arr[unit], "type": part["type"],
            "request_id": req_ids, "spend": part["spend"], "arm": arms[unit],
        }).with_columns(
            pl.col("event_time").cast(pl.Datetime("us", "UTC")),
            item_kind=pl.lit("ad"),
            event_id=pl.format("e{}-{}", pl.lit(f"{part['prefix']}{seed}"), pl.int_range(pl.len())),
            consent_personalization=pl.lit(True), consent_measurement=pl.lit(True),
        )
        if tagged:
            d = d.with_columns(experiment_arms=pl.format('{{"{}": "{}"}}', pl.lit(exp_id), pl.col("arm")))
        else:
            d = d.with_columns(experiment_arms=pl.lit("{}"))
        return d

    fb_main = frame(main, True)
    # request units: no user id in the events (no personalization consent)
    req_unit_flag = is_request_unit[main["unit"]]
    fb_main = fb_main.with_columns(
        user_id=pl.when(pl.Series(req_unit_flag)).then(pl.lit("anon")).otherwise(pl.col("user_id")),
        consent_personalization=~pl.Series(req_unit_flag))
    feedback = _schema_frame("feedback", {c: fb_main[c] for c in fb_main.columns})
    if len(pre["req"]):
        fb_pre = frame(pre, False)
        feedback = pl.concat([feedback, _schema_frame("feedback", {c: fb_pre[c] for c in fb_pre.columns})])

    # exposures: one per unit at its first request; request units are keyed by that request id
    exposures = _schema_frame("exposures", {
        "event_id": [f"x{seed}-{i}" for i in range(n)],
        "event_time": pl.Series(start_us + (t0 * day_us).astype(np.int64)).cast(pl.Datetime("us", "UTC")),
        "user_id": np.where(is_request_unit, "anon", id_arr),
        "experiment_id": [exp_id] * n, "layer": [experiment.layer] * n, "arm": arms,
        "unit_type": np.where(is_request_unit, "request", "user"), "unit_id": unit_ids,
        "request_id": first_req_ids,
    })
    return exposures, feedback
