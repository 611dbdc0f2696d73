"""Metrics agree with scikit-learn and behave at the edges."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from models import auc, calibration, evaluate, log_loss, normalized_entropy


def test_auc_and_logloss_match_sklearn():
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    y = rng.random(2000) < p
    assert abs(auc(y, p) - roc_auc_score(y, p)) < 1e-9
    assert abs(log_loss(y, p) - sk_log_loss(y, p)) < 1e-6


def test_calibration_and_ne():
    rng = np.random.default_rng(1)
    p = rng.random(5000) * 0.2
    y = rng.random(5000) < p
    cal = calibration(y, p)
    assert 0.9 < cal["ratio"] < 1.1 and len(cal["deciles"]) == 10
    assert normalized_entropy(y, np.full(len(y), y.mean())) == np.float64(1.0) or abs(normalized_entropy(y, np.full(len(y), y.mean())) - 1) < 1e-6
    m = evaluate(y, p, {"device": np.where(np.arange(5000) % 2, "phone", "glasses")})
    assert set(m["slices"]["device"]) == {"phone", "glasses"}
    assert np.isnan(auc(np.zeros(3), np.arange(3)))
