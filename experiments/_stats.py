"""Statistics over plain numpy arrays: the pure core of the analysis.

Every metric is a ratio of per-unit sums, ``sum(y) / sum(x)`` (``x = 1`` for per-unit
means). The delta method is applied through *pseudo-values*
``v_i = R + (y_i - R x_i) / mean(x)``: their mean is ``R`` and ``var(v) / n`` is the
delta-method variance of ``R``, so Welch's test, CUPED and the sequential test all run
on the pseudo-values of each arm (Deng et al. 2018, "Applying the delta method in
metric analytics"). Units, not events, are independent: that is why the variance is
taken over units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def pseudo_values(y: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    """``(R, v)`` with ``R = sum(y)/sum(x)`` and ``v`` the delta-method pseudo-values."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    mx = x.mean() if len(x) else 0.0
    if mx <= 0:
        return math.nan, np.full(len(y), math.nan)
    r = y.sum() / x.sum()
    return r, r + (y - r * x) / mx


def delta_variance(y: np.ndarray, x: np.ndarray) -> float:
    """Textbook delta-method variance of ``mean(y)/mean(x)`` (used to cross-check ``pseudo_values``)."""
    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float)
    n = len(y)
    my, mx = y.mean(), x.mean()
    vy, vx = y.var(ddof=1), x.var(ddof=1)
    cxy = np.cov(y, x, ddof=1)[0, 1]
    return (vy / mx**2 - 2 * my * cxy / mx**3 + my**2 * vx / mx**4) / n


def cuped_theta(values: list[np.ndarray], covariates: list[np.ndarray]) -> float:
    """Pooled within-arm slope of the metric on the pre-period covariate (ANCOVA-equivalent)."""
    sxy = sxx = 0.0
    for v, c in zip(values, covariates):
        if len(v) < 2:
            continue
        dc = c - c.mean()
        sxy += float(((v - v.mean()) * dc).sum())
        sxx += float((dc * dc).sum())
    return sxy / sxx if sxx > 0 else 0.0


def cuped_adjust(values: list[np.ndarray], covariates: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """``v - theta (c - mean_all(c))`` per arm; the mean covariate is pooled so arm means stay unbiased."""
    theta = cuped_theta(values, covariates)
    pooled = float(np.concatenate(covariates).mean()) if covariates else 0.0
    return [v - theta * (c - pooled) for v, c in zip(values, covariates)], theta


def welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Welch's t-test of mean(a) - mean(b): ``(diff, se, df, two-sided p)``."""
    na, nb = len(a), len(b)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    diff = float(a.mean() - b.mean())
    if se == 0:
        return diff, 0.0, float(na + nb - 2), (1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    return diff, se, df, float(2 * stats.t.sf(abs(t), df))


def mixture_r(alpha: float) -> float:
    """tau²/v that makes the normal-mixture confidence sequence tightest at variance v."""
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda r: (1 + 1 / r) * (2 * math.log(1 / alpha) + math.log1p(r)),
                          bounds=(0.05, 1e4), method="bounded")
    return float(res.x)


def mixture_half_width(v: float, tau2: float, alpha: float) -> float:
    """Half-width of the always-valid (1-alpha) confidence sequence for an estimate with variance ``v``.

    Normal-mixture mSPRT (Robbins 1970; Johari et al. 2017; Howard et al. 2021): with a
    N(0, tau²) mixture over the effect, P(the sequence ever excludes the truth) <= alpha,
    however often one looks.
    """
    if v <= 0 or tau2 <= 0:
        return math.nan
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))


def mixture_p_value(estimate: float, v: float, tau2: float) -> float:
    """Always-valid p-value at one look: ``min(1, 1/Lambda)`` of the mixture likelihood ratio."""
    if v <= 0 or tau2 <= 0 or not math.isfinite(estimate):
        return math.nan
    log_lr = 0.5 * math.log(v / (v + tau2)) + tau2 * estimate**2 / (2 * v * (v + tau2))
    return float(min(1.0, math.exp(-log_lr)))


def srm_test(observed: list[int], weights: list[float]) -> tuple[float, float]:
    """Chi-square goodness of fit of unit counts to the configured split: ``(chi2, p)``."""
    obs = np.asarray(observed, dtype=float)
    w = np.asarray(weights, dtype=float) / sum(weights)
    total = obs.sum()
    if total == 0:
        return 0.0, 1.0
    expected = total * w
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    return chi2, float(stats.chi2.sf(chi2, len(obs) - 1))


def adjust_p_values(p_values: list[float], method: str = "holm") -> list[float]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    nan = np.isnan(p)
    q = np.where(nan, 1.0, p)
    order = np.argsort(q)
    adj = np.empty(m)
    if method == "holm":
        running = 0.0
        for rank, idx in enumerate(order):
            running = max(running, min(1.0, (m - rank) * q[idx]))
            adj[idx] = running
    elif method in ("bh", "fdr_bh", "benjamini-hochberg"):
        running = 1.0
        for rank in range(m - 1, -1, -1):
            idx = order[rank]
            running = min(running, q[idx] * m / (rank + 1))
            adj[idx] = min(1.0, running)
    else:
        raise ValueError(f"unknown correction {method!r}; use 'holm' or 'bh'")
    adj[nan] = np.nan
    return adj.tolist()


def power(effect: float, se: float, alpha: float = 0.05) -> float:
    """Two-sided power of a z-test to detect ``effect`` when the estimate's standard error is ``se``."""
    if se <= 0 or not math.isfinite(se):
        return math.nan
    z = stats.norm.ppf(1 - alpha / 2)
    k = abs(effect) / se
    return float(stats.norm.cdf(k - z) + stats.norm.cdf(-k - z))


def mde(se: float, alpha: float = 0.05, target_power: float = 0.8) -> float:
    """Smallest absolute effect detected with ``target_power`` at standard error ``se``."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target_power)) * se)


@dataclass(frozen=True)
class Lift:
    """Treatment vs control on one metric."""

    control: float
    treatment: float
    abs_lift: float
    abs_ci: tuple[float, float]
    rel_lift: float
    rel_ci: tuple[float, float]
    se: float
    df: float
    p_value: float
    seq_ci: tuple[float, float]
    seq_p_value: float
    variance_reduction: float      # share of variance removed by CUPED (0 without)
    n_control: int
    n_treatment: int


def compare(y_t, x_t, y_c, x_c, *, cov_t=None, cov_c=None, alpha: float = 0.05,
            tau2: float | None = None) -> Lift:
    """Lift of treatment over control for the ratio metric ``sum(y)/sum(x)``.

    Welch test and CI on the (CUPED-adjusted, when covariates are given) pseudo-values;
    the relative CI by the delta method on the ratio of arm means; the always-valid
    confidence sequence with mixture variance ``tau2`` (default: tightest now).
    """
    r_t, v_t = pseudo_values(y_t, x_t)
    r_c, v_c = pseudo_values(y_c, x_c)
    n_t, n_c = len(v_t), len(v_c)
    nan2 = (math.nan, math.nan)
    if n_t < 2 or n_c < 2 or math.isnan(r_t) or math.isnan(r_c):
        return Lift(r_c, r_t, r_t - r_c, nan2, math.nan, nan2, math.nan, math.nan, math.nan, nan2, math.nan, 0.0, n_c, n_t)
    raw_var = v_t.var(ddof=1) / n_t + v_c.var(ddof=1) / n_c
    reduction = 0.0
    if cov_t is not None and cov_c is not None and (np.var(cov_t) > 0 or np.var(cov_c) > 0):
        (v_t, v_c), _ = cuped_adjust([v_t, v_c], [np.asarray(cov_t, float), np.asarray(cov_c, float)])
        adj_var = v_t.var(ddof=1) / n_t + v_c.var(ddof=1) / n_c
        reduction = 1 - adj_var / raw_var if raw_var > 0 else 0.0
    diff, se, df, p = welch(v_t, v_c)
    tq = stats.t.ppf(1 - alpha / 2, df) if se > 0 else 0.0
    m_t, m_c = float(v_t.mean()), float(v_c.mean())
    var_t, var_c = v_t.var(ddof=1) / n_t, v_c.var(ddof=1) / n_c
    if m_c != 0:
        rel = m_t / m_c - 1
        rel_se = math.sqrt(var_t / m_c**2 + m_t**2 * var_c / m_c**4)
        rel_ci = (rel - tq * rel_se, rel + tq * rel_se)
    else:
        rel, rel_ci = math.nan, nan2
    v = se * se
    tau2 = tau2 if tau2 is not None else mixture_r(alpha) * v
    hw = mixture_half_width(v, tau2, alpha)
    seq_p = mixture_p_value(diff, v, tau2) if v > 0 else (1.0 if diff == 0 else 0.0)
    return Lift(r_c, r_t, diff, (diff - tq * se, diff + tq * se), rel, rel_ci, se, df, p,
                (diff - hw, diff + hw), seq_p, reduction, n_c, n_t)
