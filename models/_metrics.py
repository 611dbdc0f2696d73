"""Offline evaluation: AUC, log-loss, normalized entropy, calibration, slices, plots.

Pure functions over numpy arrays; ``write_report`` is the only one that touches disk
(a JSON table and calibration/ROC PNGs per model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np


def auc(labels, scores) -> float:
    """Area under the ROC curve via ranks (ties count one half); NaN with one class."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(np.asarray(scores, dtype=np.float64))
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else float("nan")


def normalized_entropy(labels, probs) -> float:
    """Log-loss divided by the entropy of the base rate (<1 means better than the average)."""
    y = np.asarray(labels, dtype=np.float64)
    if not len(y):
        return float("nan")
    p = float(np.clip(y.mean(), 1e-7, 1 - 1e-7))
    base = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    return log_loss(y, probs) / base


def calibration(labels, probs, bins: int = 10) -> dict:
    """Overall predicted/observed ratio and per-decile (of the prediction) predicted vs observed."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    ratio = float(p.mean() / y.mean()) if y.sum() > 0 else float("nan")
    order = np.argsort(p, kind="stable")
    deciles = []
    for part in np.array_split(order, bins):
        if len(part):
            deciles.append({"predicted": float(p[part].mean()), "observed": float(y[part].mean()), "n": int(len(part))})
    return {"ratio": ratio, "deciles": deciles}


def evaluate(labels, probs, slices: Mapping[str, np.ndarray] | None = None) -> dict:
    """AUC, log-loss, NE, calibration, and the same per value of each slice column."""
    y = np.asarray(labels)
    p = np.asarray(probs)
    cal = calibration(y, p)
    out = {"auc": auc(y, p), "logloss": log_loss(y, p), "ne": normalized_entropy(y, p),
           "calibration": cal["ratio"], "deciles": cal["deciles"], "n": int(len(y)),
           "positive_rate": float(np.mean(y)) if len(y) else float("nan")}
    if slices:
        out["slices"] = {}
        for name, col in slices.items():
            col = np.asarray(col).astype(str)
            out["slices"][name] = {
                v: {"auc": auc(y[col == v], p[col == v]), "logloss": log_loss(y[col == v], p[col == v]),
                    "calibration": calibration(y[col == v], p[col == v])["ratio"], "n": int((col == v).sum())}
                for v in sorted(set(col.tolist()))
            }
    return out


def roc_curve(labels, scores, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ys = y[order]
    tpr = np.concatenate([[0.0], np.cumsum(ys) / max(ys.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~ys) / max((~ys).sum(), 1)])
    idx = np.linspace(0, len(tpr) - 1, min(points, len(tpr))).astype(int)
    return fpr[idx], tpr[idx]


def write_report(out_dir: Path, labels, predictions: Mapping[str, np.ndarray], metrics: Mapping[str, dict],
                 title: str = "pCTR") -> dict[str, str]:
    """``metrics.json`` plus ``calibration.png`` and ``roc.png`` with one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = 0.0
    for name, m in metrics.items():
        if "deciles" not in m:
            continue
        xs = [d["predicted"] for d in m["deciles"]]
        ys = [d["observed"] for d in m["deciles"]]
        top = max(top, *xs, *ys)
        ax.plot(xs, ys, marker="o", label=f"{name} (ratio {m['calibration']:.2f})")
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="perfect")
    ax.set(xlabel=f"mean predicted {title} (decile)", ylabel="observed rate", title=f"{title} calibration by decile")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, p in predictions.items():
        fpr, tpr = roc_curve(labels, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics.get(name, {}).get('auc', float('nan')):.4f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title} ROC (test split)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc.png", dpi=110)
    plt.close(fig)
    return {"metrics": str(out_dir / "metrics.json"), "calibration": str(out_dir / "calibration.png"),
            "roc": str(out_dir / "roc.png")}
