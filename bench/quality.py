"""Model quality on the simulator's default world against the Bayes-optimal ceiling.

One logged-impression set from ``simulation.simulate_logged_impressions`` (default world),
features computed point-in-time with polars (no Feast data exists for a fresh simulated
log; the Feast path is tested in tests/integration/models), time split 70/10/20. Every
model is trained on the same encoded features: TorchRec (sharded over ``--world-size``
gloo ranks), XGBoost (hist), logistic regression, popularity. Test-split AUC, log-loss,
NE and calibration (predicted/observed CTR) for each (TorchRec: mean over ``--seeds`` runs, the per-seed
figures are in ``torchrec_seeds``); the true probabilities give the
Bayes-optimal AUC/log-loss on the same rows. Report (metrics.json, calibration.png,
roc.png) in ``bench/results/quality/``.

Usage: python -m bench.quality [--quick] [--world-size N] [--requests N] [--days D]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench._common import RESULTS, emit, progress


def _oracle_ceilings(world, test) -> dict:
    """What the truth scores on the test rows with its unobservable parts taken out.

    The Bayes AUC uses every term of the ground truth. Two terms no feature carries
    directly: the user's latent tastes (bias, interest per category, brand affinity,
    price fit) and the item's latent quality (seen only through a noisy rating and
    clicks). Removing them from the true logit gives the ceiling of a model that
    learns nothing user-specific (and nothing item-specific beyond the observable terms).
    """
    from simulation import auc
    from simulation._truth import ResponseModel

    m = ResponseModel()
    uidx = {u: i for i, u in enumerate(world.users["user_id"].to_list())}
    iidx = {it: i for i, it in enumerate(world.items.item_id.tolist())}
    u = np.array([uidx[x] for x in test["user_id"].to_list()])
    it = np.array([iidx[x] for x in test["item_id"].to_list()])
    lat, items = world.latent, world.items
    p = np.clip(test["p_click"].to_numpy(), 1e-9, 1 - 1e-9)
    logit = np.log(p / (1 - p))
    user = (lat.user_bias[u] + m.w_interest * lat.user_interest[u, items.category[it]]
            + m.w_brand * lat.user_brand[u, items.brand[it]]
            - m.w_price * lat.user_price_sensitivity[u] * np.maximum(0, items.price_level[it] - lat.user_price_level[u]))
    y = test["click"].to_numpy()
    return {"auc_truth_without_user_tastes": round(float(auc(y, logit - user)), 5),
            "auc_truth_without_user_tastes_and_quality": round(float(auc(y, logit - user - m.w_quality * items.quality[it])), 5)}


def _learnable_ceiling(world, split, steps: int = 300) -> dict:
    """What an ideal learner could reach from this log: the truth's form and its observable
    terms known exactly, the latent terms estimated from the training split's clicks.

    Per user a bias, a taste per category top, per leaf and per brand, and per item a
    quality (plus a slope on the observable rating) are fitted by MAP — Bernoulli
    likelihood with the true logit minus the latent terms as offset, Gaussian priors of
    about the latent terms' scale — with full-batch Adam; the test rows are scored with
    the fitted terms. (The user's price fit, worth ~0.0025 AUC, is not modelled.) A model
    that must also learn the observable terms cannot beat this by more than noise.
    """
    import torch

    from simulation import auc
    from simulation._truth import ResponseModel

    m, lat, items = ResponseModel(), world.latent, world.items
    uidx = {u: i for i, u in enumerate(world.users["user_id"].to_list())}
    iidx = {it: i for i, it in enumerate(items.item_id.tolist())}
    n_t, (n_u, n_c), n_b = int(world.category_top.max()) + 1, lat.user_interest.shape, lat.user_brand.shape[1]

    def terms(frame):
        u = np.array([uidx[x] for x in frame["user_id"].to_list()])
        it = np.array([iidx[x] for x in frame["item_id"].to_list()])
        cat, br = items.category[it], items.brand[it]
        p = np.clip(frame["p_click"].to_numpy(), 1e-9, 1 - 1e-9)
        latent = (lat.user_bias[u] + m.w_interest * lat.user_interest[u, cat] + m.w_brand * lat.user_brand[u, br]
                  - m.w_price * lat.user_price_sensitivity[u] * np.maximum(0, items.price_level[it] - lat.user_price_level[u])
                  + m.w_quality * items.quality[it])
        r = np.clip(items.rating[it], 0.01, 0.99)
        ids = {"bias": u, "top": u * n_t + world.category_top[cat], "leaf": u * n_c + cat, "brand": u * n_b + br,
               "item": it}
        return (torch.as_tensor(np.log(p / (1 - p)) - latent, dtype=torch.float32),
                torch.as_tensor(np.log(r / (1 - r)), dtype=torch.float32),
                {k: torch.as_tensor(v, dtype=torch.long) for k, v in ids.items()},
                torch.as_tensor(frame["click"].to_numpy().astype(np.float32)))

    size = {"bias": n_u, "top": n_u * n_t, "leaf": n_u * n_c, "brand": n_u * n_b, "item": len(iidx)}
    prior_sd = {"bias": 0.25, "top": 0.15, "leaf": 0.15, "brand": 0.1, "item": 0.25}
    theta = {k: torch.zeros(n, requires_grad=True) for k, n in size.items()}
    slope = torch.zeros(1, requires_grad=True)

    def logit(offset, rating, ids):
        return offset + slope * rating + sum(theta[k][ids[k]] for k in theta)

    off, rating, ids, y = terms(split.train)
    opt = torch.optim.Adam([*theta.values(), slope], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logit(off, rating, ids), y, reduction="sum")
        (loss + sum((theta[k] ** 2).sum() / (2 * prior_sd[k] ** 2) for k in theta)).backward()
        opt.step()
    off, rating, ids, y = terms(split.test)
    with torch.no_grad():
        score = logit(off, rating, ids).numpy()
    return {"auc_learnable_ceiling": round(float(auc(y.numpy(), score)), 5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller log, TorchRec + XGBoost only (~1-2 minutes)")
    ap.add_argument("--world-size", type=int, default=2)
    ap.add_argument("--requests", type=int, default=None, help="simulated requests (default 200k; quick 40k)")
    ap.add_argument("--days", type=float, default=None,
                    help="days the simulated requests are spread over (default 7; the world is the same)")
    ap.add_argument("--learnable-ceiling", action="store_true",
                    help="also fit the truth's latent terms from the training clicks (auc_learnable_ceiling; minutes)")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--models", default=None, help="comma list (default: all; quick: torchrec,xgboost)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="TorchRec runs with seeds 0..N-1; headline = mean (default 2; quick 1)")
    args = ap.parse_args()

    from models import bayes_ceiling, evaluate_predictor, fit_model, point_in_time_features, prepare, write_report
    from models._torchrec import RankerConfig
    from simulation import WorldConfig, build_world, simulate_logged_impressions

    n_req = args.requests or (40_000 if args.quick else 200_000)
    days = args.days or 7.0
    kinds = (args.models or ("torchrec,xgboost" if args.quick else "torchrec,xgboost,logreg,popularity")).split(",")
    t0 = time.perf_counter()
    progress(f"simulating {n_req} requests over {days:g} days on the default world ...")
    world = build_world(WorldConfig())
    log = simulate_logged_impressions(world, n_req, seed=1, days=days)
    progress(f"{log.height} impressions; point-in-time features (polars) ...")
    prep = prepare(point_in_time_features(log))
    progress(f"train {prep.split.train.height} / valid {prep.split.valid.height} / test {prep.split.test.height} rows "
             f"({time.perf_counter() - t0:.0f}s)")
    bayes = bayes_ceiling(prep)
    oracle = _oracle_ceilings(world, prep.split.test)
    if args.learnable_ceiling:
        progress("fitting the latent terms from the training clicks (learnable ceiling) ...")
        oracle.update(_learnable_ceiling(world, prep.split))
        progress(f"learnable ceiling: AUC {oracle['auc_learnable_ceiling']:.4f}")
    # label noise of the windows: the true probabilities' own predicted/observed ratio
    bayes_cal_valid = float(prep.split.valid["p_click"].mean() / max(prep.y_valid[:, 0].mean(), 1e-9))
    progress(f"truth without user tastes: AUC {oracle['auc_truth_without_user_tastes']:.4f}; without those and "
             f"item quality {oracle['auc_truth_without_user_tastes_and_quality']:.4f}")
    metrics, preds, seconds, per_seed = {}, {}, {}, []
    n_seeds = args.seeds or (1 if args.quick else 2)
    for kind in kinds:
        for seed in range(n_seeds if kind == "torchrec" else 1):
            progress(f"training {kind}" + (f" (seed {seed})" if kind == "torchrec" else "") + " ...")
            cfg = RankerConfig(seed=seed)
            if args.epochs:
                cfg.epochs = args.epochs
            t = time.perf_counter()
            trained = fit_model(kind, prep, world_size=args.world_size, ranker_config=cfg, progress=True)
            seconds[kind] = round(time.perf_counter() - t, 1)
            m, p = evaluate_predictor(trained.predictor, prep)
            progress(f"{kind}: AUC {m['auc']:.4f}  log-loss {m['logloss']:.4f}  NE {m['ne']:.4f}  "
                     f"calibration {m['calibration']:.3f}  ({seconds[kind]}s)")
            if kind == "torchrec":
                per_seed.append({"seed": seed, "auc": round(m["auc"], 5), "logloss": round(m["logloss"], 5),
                                 "calibration": round(m["calibration"], 4)})
            if seed == 0:
                metrics[kind], preds[kind] = m, p[:, 0]
    if per_seed:   # headline = mean over seeds (the report plots show seed 0)
        for k in ("auc", "logloss", "calibration"):
            metrics["torchrec"][k] = float(np.mean([r[k] for r in per_seed]))
    preds["bayes (true p)"] = prep.split.test["p_click"].to_numpy()
    metrics["bayes (true p)"] = bayes
    report = write_report(RESULTS / "quality", prep.y_test[:, 0], preds, metrics)
    progress(f"Bayes-optimal: AUC {bayes['auc']:.4f}  log-loss {bayes['logloss']:.4f}; report in {RESULTS / 'quality'}")

    def key(kind, name):
        return round(float(metrics[kind][name]), 5) if kind in metrics else None

    figures = {
        "auc_torchrec": key("torchrec", "auc"), "auc_xgboost": key("xgboost", "auc"),
        "auc_bayes": round(bayes["auc"], 5),
        "logloss_torchrec": key("torchrec", "logloss"), "logloss_xgboost": key("xgboost", "logloss"),
        "logloss_bayes": round(bayes["logloss"], 5),
        "calibration_torchrec": key("torchrec", "calibration"), "calibration_xgboost": key("xgboost", "calibration"),
        "ne_torchrec": key("torchrec", "ne"), "ne_bayes": round(float(bayes["ne"]), 5),
        "auc_logreg": key("logreg", "auc"), "auc_popularity": key("popularity", "auc"),
        "cvr_auc_torchrec": round(metrics["torchrec"]["cvr"]["auc"], 5) if "cvr" in metrics.get("torchrec", {}) else None,
        "slices_torchrec": {k: {v: round(s["auc"], 4) for v, s in d.items()}
                            for k, d in metrics.get("torchrec", {}).get("slices", {}).items()},
        "gap_to_bayes_auc": round(bayes["auc"] - metrics["torchrec"]["auc"], 5) if "torchrec" in metrics else None,
        "gap_to_xgboost_auc": (round(metrics["xgboost"]["auc"] - metrics["torchrec"]["auc"], 5)
                               if {"torchrec", "xgboost"} <= set(metrics) else None),
        "torchrec_seeds": per_seed,
        **oracle, "calibration_bayes_test": round(float(bayes["calibration"]), 4),
        "calibration_bayes_valid": round(bayes_cal_valid, 4),
        "requests": n_req, "days": days, "impressions": log.height, "test_rows": prep.split.test.height,
        "world_size": args.world_size, "train_seconds": seconds, "report": {k: str(Path(v)) for k, v in report.items()},
    }
    emit("quality", figures, args.quick)


if __name__ == "__main__":
    main()
