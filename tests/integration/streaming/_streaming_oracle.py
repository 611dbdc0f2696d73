"""An independent polars computation of the expected feature values from raw events.

Written from the feature definitions in docs/streaming.md, not from streaming's
bucket code: it works on the events themselves.
"""

from __future__ import annotations

import polars as pl
import pytest

MIN = 60_000


def _window(df: pl.DataFrame, key: str, minutes: int) -> pl.Expr:
    return (pl.col("ts") // MIN > pl.col("T") // MIN - minutes)


def context_frame(events, matcher, consent_of) -> pl.DataFrame:
    """One row per stored context event: user, ts, keyed, scene, objects, intent cats, all cats."""
    rows = []
    for m in events:
        p = consent_of(m)
        if not p.context:
            continue
        scene = m.context.scene if m.context.scene and not matcher.match(m.context.scene).sensitive else None
        objs = [o for o in m.context.objects if not matcher.match(o).sensitive]
        obj_cats = [c for o in objs for c in matcher.match(o).categories]
        intents = list(matcher.match(m.context.intent_text).categories)
        rows.append((m.event_id, m.event_time_ms, m.user_id, p.personalization, scene, objs, intents, obj_cats + intents))
    return pl.DataFrame(rows, schema={"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "keyed": pl.Boolean,
                                      "scene": pl.String, "objects": pl.List(pl.String), "intents": pl.List(pl.String),
                                      "cats": pl.List(pl.String)}, orient="row")


def feedback_frame(events, consent_of) -> pl.DataFrame:
    rows = []
    for m in events:
        p = consent_of(m)
        if not p.context:
            continue
        rows.append((m.event_id, m.event_time_ms, m.user_id, p.personalization, int(m.type), m.item_id, m.campaign_id,
                     m.category, m.context.scene, m.spend))
    return pl.DataFrame(rows, schema={"event_id": pl.String, "ts": pl.Int64, "user_id": pl.String, "keyed": pl.Boolean,
                                      "type": pl.Int64, "item_id": pl.String, "campaign_id": pl.String,
                                      "category": pl.String, "scene": pl.String, "spend": pl.Float64}, orient="row")


def user_context(ctx: pl.DataFrame, recent_n: int = 10) -> dict[str, dict]:
    out = {}
    for (user,), g in ctx.filter(pl.col("keyed")).group_by("user_id"):
        T = g["ts"].max()
        g = g.with_columns(age=T // MIN - pl.col("ts") // MIN)
        row = {"context_events_1h": g.filter(pl.col("age") < 60).height,
               "context_events_24h": g.filter(pl.col("age") < 1440).height}
        day = g.filter(pl.col("age") < 1440)
        for name, col in (("recent_scenes", "scene"), ("recent_objects", "objects"), ("recent_intent_categories", "intents")):
            vals = day.select("ts", pl.col(col))
            if col != "scene":
                vals = vals.with_columns(pl.col(col).list.unique()).explode(col)
            vals = vals.drop_nulls(col).group_by(col).agg(pl.len().alias("n"), pl.col("ts").max().alias("seen"))
            vals = vals.sort(["seen", col], descending=[True, False]).head(recent_n)
            row[name] = vals[col].to_list()
        out[user] = row
    return out


def counters(fb: pl.DataFrame, key: str, prior=0.02, weight=50.0) -> dict[str, dict]:
    out = {}
    for (k,), g in fb.filter(pl.col(key).is_not_null() & (pl.col(key) != "")).group_by(key):
        T = g["ts"].max()
        g = g.with_columns(age=T // MIN - pl.col("ts") // MIN)
        row = {}
        for name, w in (("1h", 60), ("24h", 1440)):
            win = g.filter(pl.col("age") < w)
            imp = win.filter(pl.col("type") == 1).height
            clk = win.filter(pl.col("type") == 2).height
            row[f"impressions_{name}"] = imp
            row[f"clicks_{name}"] = clk
            row[f"conversions_{name}"] = win.filter(pl.col("type") == 3).height
            row[f"ctr_{name}"] = (clk + prior * weight) / (imp + weight)
            if key == "campaign_id":
                row[f"spend_{name}"] = win["spend"].sum()
        out[k] = row
    return out


def user_engagement(fb: pl.DataFrame) -> dict[str, dict]:
    out = {}
    for (user,), g in fb.filter(pl.col("keyed") & pl.col("type").is_in([1, 2])).group_by("user_id"):
        T = g["ts"].max()
        g = g.with_columns(age=T // MIN - pl.col("ts") // MIN)
        row = {}
        for name, w in (("1h", 60), ("24h", 1440), ("7d", 7 * 1440)):
            win = g.filter(pl.col("age") < w)
            row[f"impressions_{name}"] = win.filter(pl.col("type") == 1).height
            row[f"clicks_{name}"] = win.filter(pl.col("type") == 2).height
        week = g.filter(pl.col("age") < 7 * 1440)
        cats = (week.group_by("category").agg((pl.col("type") == 2).sum().alias("c"), (pl.col("type") == 1).sum().alias("i"),
                                              pl.col("ts").max().alias("seen"))
                .sort(["c", "i", "seen", "category"], descending=[True, True, True, False]).head(20))
        row["engaged_categories_7d"] = cats["category"].to_list()
        row["engaged_category_clicks_7d"] = cats["c"].to_list()
        out[user] = row
    return out


def popularity(ctx: pl.DataFrame, fb: pl.DataFrame, prior=0.02, weight=50.0) -> dict[str, dict]:
    c = (ctx.filter(pl.col("scene").is_not_null()).select("ts", "scene", pl.col("cats").list.unique()).explode("cats")
         .drop_nulls("cats").select("ts", (pl.col("scene") + "|" + pl.col("cats")).alias("key"), pl.lit(0).alias("type")))
    f = (fb.filter((pl.col("scene") != "") & (pl.col("category") != "") & pl.col("type").is_in([1, 2]))
         .select("ts", (pl.col("scene") + "|" + pl.col("category")).alias("key"), "type"))
    allev = pl.concat([c, f.cast({"type": pl.Int32})], how="vertical_relaxed")
    out = {}
    for (k,), g in allev.group_by("key"):
        T = g["ts"].max()
        g = g.with_columns(age=T // MIN - pl.col("ts") // MIN)
        day = g.filter(pl.col("age") < 1440)
        imp = day.filter(pl.col("type") == 1).height
        clk = day.filter(pl.col("type") == 2).height
        out[k] = {"events_1h": g.filter((pl.col("age") < 60) & (pl.col("type") == 0)).height,
                  "events_24h": day.filter(pl.col("type") == 0).height, "impressions_24h": imp, "clicks_24h": clk,
                  "ctr_24h": (clk + prior * weight) / (imp + weight)}
    return out


# -- reading the stores back --------------------------------------------------------
def stored_id(settings, app_user_id: str) -> str:
    """The form streaming stores a user under (and serving looks it up by)."""
    from privacy import pseudonymize

    return pseudonymize(app_user_id, settings.privacy.hmac_key)


def online(settings, view: str, keys: list[str]) -> dict[str, dict]:
    """Online rows by entity; user-keyed views are given app user ids and read under their
    pseudonyms (as serving does), the result keyed by the app ids given."""
    from features import VIEWS_BY_NAME, open_store

    spec = VIEWS_BY_NAME[view]
    store = open_store(settings)
    lookup = [stored_id(settings, k) for k in keys] if spec.user_keyed else list(keys)
    got = store.get_online_features(features=[f"{view}:{f}" for f in spec.feature_names],
                                    entity_rows=[{spec.entity: k} for k in lookup]).to_dict()
    return {k: {f: got[f][i] for f in spec.feature_names} for i, k in enumerate(keys)}


def offline_latest(settings, view: str, app_user_ids=None) -> pl.DataFrame:
    """Latest offline row per entity; with ``app_user_ids`` the stored pseudonyms are mapped back
    to those app ids (a pseudonym of nobody in the list stays as it is, so comparisons fail)."""
    from features import VIEWS_BY_NAME, offline_dir

    spec = VIEWS_BY_NAME[view]
    frame = pl.read_parquet(sorted(offline_dir(settings.feast_dir, view).glob("part-*.parquet")))
    frame = frame.sort("event_timestamp").group_by(spec.entity).last()
    if app_user_ids is not None:
        back = {stored_id(settings, u): u for u in app_user_ids}
        frame = frame.with_columns(pl.col(spec.entity).replace(back))
    return frame


def check(expected: dict[str, dict], actual: dict[str, dict], fields=None) -> None:
    assert set(expected) <= set(actual)
    for key, row in expected.items():
        for name, value in row.items():
            if fields and name not in fields:
                continue
            got = actual[key][name]
            if isinstance(value, float):
                assert got == pytest.approx(value), (key, name)
            else:
                assert got == value, (key, name, got, value)
