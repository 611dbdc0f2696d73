"""Bayes-optimal metrics: how well the true probabilities themselves score the labels."""

from __future__ import annotations

import numpy as np

from simulation.errors import SimulationConfigError


def auc(labels, scores) -> float:
    """Area under the ROC curve (ties count one half), via ranks."""
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise SimulationConfigError("AUC needs both positive and negative labels; simulate more impressions")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels, probs, eps: float = 1e-12) -> float:
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def bayes_metrics(labels, true_probs) -> dict[str, float]:
    """AUC and log-loss of the true probabilities on these labels: the best any model can do.

    Returns ``{"auc", "logloss", "n", "positive_rate", "mean_prob"}``; compare a model's
    test AUC/log-loss on the same rows against these.
    """
    y = np.asarray(labels)
    p = np.asarray(true_probs, dtype=np.float64)
    if len(y) != len(p):
        raise SimulationConfigError(f"labels ({len(y)}) and true_probs ({len(p)}) differ in length; pass matching rows")
    return {
        "auc": auc(y, p),
        "logloss": log_loss(y, p),
        "n": int(len(y)),
        "positive_rate": float(np.mean(y)),
        "mean_prob": float(np.mean(p)),
    }
