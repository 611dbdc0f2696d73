"""The statistics core against independent computations (scipy, statsmodels) on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments import _stats


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    n_t, n_c = 800, 760
    x_t = rng.poisson(6, n_t) + 1.0
    x_c = rng.poisson(6, n_c) + 1.0
    y_t = rng.binomial(x_t.astype(int), 0.055).astype(float)
    y_c = rng.binomial(x_c.astype(int), 0.05).astype(float)
    return y_t, x_t, y_c, x_c


def test_welch_matches_scipy_and_statsmodels(data):
    y_t, _, y_c, _ = data
    diff, se, df, p = _stats.welch(y_t, y_c)
    ref = stats.ttest_ind(y_t, y_c, equal_var=False)
    assert p == pytest.approx(ref.pvalue, rel=1e-10)
    cm = CompareMeans(DescrStatsW(y_t), DescrStatsW(y_c))
    lo, hi = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    lift = _stats.compare(y_t, np.ones_like(y_t), y_c, np.ones_like(y_c))
    assert lift.abs_ci == pytest.approx((lo, hi), rel=1e-9)
    assert lift.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert diff == pytest.approx(y_t.mean() - y_c.mean())


def test_delta_method_ratio(data):
    y_t, x_t, y_c, x_c = data
    r, v = _stats.pseudo_values(y_t, x_t)
    assert r == pytest.approx(y_t.sum() / x_t.sum())
    assert v.mean() == pytest.approx(r)
    assert v.var(ddof=1) / len(v) == pytest.approx(_stats.delta_variance(y_t, x_t), rel=1e-9)
    lift = _stats.compare(y_t, x_t, y_c, x_c)
    se = math.sqrt(_stats.delta_variance(y_t, x_t) + _stats.delta_variance(y_c, x_c))
    assert lift.se == pytest.approx(se, rel=1e-9)
    # relative lift interval by the delta method on R_t / R_c
    r_c = y_c.sum() / x_c.sum()
    var_rel = _stats.delta_variance(y_t, x_t) / r_c**2 + r**2 * _stats.delta_variance(y_c, x_c) / r_c**4
    tq = stats.t.ppf(0.975, lift.df)
    assert lift.rel_ci == pytest.approx((r / r_c - 1 - tq * math.sqrt(var_rel), r / r_c - 1 + tq * math.sqrt(var_rel)))


def test_delta_method_against_bootstrap(data):
    y_t, x_t, _, _ = data
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(y_t), (2000, len(y_t)))
    boot = y_t[idx].sum(1) / x_t[idx].sum(1)
    assert math.sqrt(_stats.delta_variance(y_t, x_t)) == pytest.approx(boot.std(ddof=1), rel=0.1)


def test_cuped_equals_ancova_ols():
    import statsmodels.api as sm

    rng = np.random.default_rng(11)
    n = 1500
    cov = rng.normal(10, 3, 2 * n)
    treat = np.r_[np.ones(n), np.zeros(n)]
    y = 2 + 0.8 * cov + 0.3 * treat + rng.normal(0, 1, 2 * n)
    (adj_t, adj_c), theta = _stats.cuped_adjust([y[:n], y[n:]], [cov[:n], cov[n:]])
    ols = sm.OLS(y, sm.add_constant(np.c_[treat, cov])).fit()
    assert adj_t.mean() - adj_c.mean() == pytest.approx(ols.params[1], rel=1e-9)
    assert theta == pytest.approx(ols.params[2], rel=1e-9)
    lift = _stats.compare(y[:n], np.ones(n), y[n:], np.ones(n), cov_t=cov[:n], cov_c=cov[n:])
    assert lift.variance_reduction > 0.8
    assert lift.se == pytest.approx(ols.bse[1], rel=0.02)


def test_srm_matches_scipy_chisquare():
    chi2, p = _stats.srm_test([5200, 4800], [1, 1])
    ref = stats.chisquare([5200, 4800], [5000, 5000])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert p < 0.001
    assert _stats.srm_test([5020, 4980], [0.5, 0.5])[1] > 0.001


@pytest.mark.parametrize("method, ref", [("holm", "holm"), ("bh", "fdr_bh")])
def test_multiple_testing_matches_statsmodels(method, ref):
    p = [0.001, 0.04, 0.03, 0.2, 0.012, 0.5]
    assert _stats.adjust_p_values(p, method) == pytest.approx(list(multipletests(p, method=ref)[1]))


def test_power_and_mde_match_statsmodels():
    sigma, n1, n2, effect = 0.22, 4000, 4200, 0.012
    se = sigma * math.sqrt(1 / n1 + 1 / n2)
    ref = NormalIndPower().power(effect_size=effect / sigma, nobs1=n1, alpha=0.05, ratio=n2 / n1)
    assert _stats.power(effect, se) == pytest.approx(ref, rel=1e-6)
    m = _stats.mde(se, 0.05, 0.8)
    assert _stats.power(m, se) == pytest.approx(0.8, abs=1e-3)
    d = NormalIndPower().solve_power(nobs1=n1, alpha=0.05, power=0.8, ratio=n2 / n1)
    assert m == pytest.approx(d * sigma, rel=1e-3)


def test_mixture_sequence_boundary_is_consistent():
    v, tau2, alpha = 0.0004, 0.0032, 0.05
    hw = _stats.mixture_half_width(v, tau2, alpha)
    assert _stats.mixture_p_value(hw, v, tau2) == pytest.approx(alpha, rel=1e-9)
    assert hw > 1.96 * math.sqrt(v)  # wider than the fixed-horizon interval: the price of peeking


def test_confidence_sequence_survives_continuous_peeking():
    """Under H0, looking after every batch: the fixed test is fooled far more than 5%, the sequence is not."""
    rng = np.random.default_rng(5)
    sims, looks, batch = 400, 50, 20
    x = rng.normal(0, 1, (sims, looks * batch))
    cums = np.cumsum(x, axis=1)[:, batch - 1::batch]
    n = np.arange(1, looks + 1) * batch
    est = cums / n
    v = 1 / n
    tau2 = _stats.mixture_r(0.05) * v[-1]
    seq_cross = np.zeros(sims, bool)
    fixed_cross = np.zeros(sims, bool)
    for k in range(looks):
        hw = _stats.mixture_half_width(v[k], tau2, 0.05)
        seq_cross |= np.abs(est[:, k]) > hw
        fixed_cross |= np.abs(est[:, k]) > 1.96 * math.sqrt(v[k])
    assert seq_cross.mean() <= 0.06
    assert fixed_cross.mean() > 0.15
