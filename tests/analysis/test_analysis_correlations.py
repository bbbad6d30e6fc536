"""Correlations: hand-computed cases, agreement with scipy, bootstrap CIs, granulated Kendall."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatvol.analysis.correlations import (
    correlate,
    correlation_table,
    fitted_runs,
    granulated_kendall,
)
from flatvol.analysis.measures import Measure, constant_measures
from flatvol.analysis.vectorized import kendall_tau_b, pearson_r, spearman_rho
from flatvol.errors import DataError, FlatvolError

# --- hand-computed values ---------------------------------------------------------------------


def test_one_swap_by_hand():
    # 6 pairs, one discordant (2,3): tau = (5 - 1) / 6. Ranks differ by d = (0, 1, -1, 0):
    # rho = 1 - 6 * 2 / (4 * 15) = 0.8. Centered x = y' = (-1.5, -.5, .5, 1.5) and
    # (-1.5, .5, -.5, 1.5): r = 4 / 5.
    x, y = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    assert kendall_tau_b(x, y) == pytest.approx(2 / 3, abs=1e-15)
    assert spearman_rho(x, y) == pytest.approx(0.8, abs=1e-15)
    assert pearson_r(x, y) == pytest.approx(0.8, abs=1e-15)
    c = correlate(x, y, n_resamples=0)
    assert (c.kendall.value, c.spearman.value, c.pearson.value) == pytest.approx((2 / 3, .8, .8))


def test_tau_b_with_ties_by_hand():
    # Pairs: (1,2) tied in x; (2,3) tied in y; the other 4 concordant.
    # tau_b = 4 / sqrt(5 * 5) = 0.8 (tau_a would be 4/6).
    x, y = np.array([1.0, 1, 2, 3]), np.array([1.0, 2, 2, 3])
    assert kendall_tau_b(x, y) == pytest.approx(0.8, abs=1e-15)
    assert stats.kendalltau(x, y).statistic == pytest.approx(0.8, abs=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_statistics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, size=(5, 31)).astype(float)  # many ties
    y = x + rng.integers(-2, 3, size=x.shape)
    for a, b, k, s, p in zip(x, y, kendall_tau_b(x, y), spearman_rho(x, y), pearson_r(x, y),
                             strict=True):
        assert k == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
        assert s == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        assert p == pytest.approx(stats.pearsonr(a, b).statistic, abs=1e-12)
    # axis argument: observations along axis 0
    np.testing.assert_allclose(kendall_tau_b(x.T, y.T, axis=0), kendall_tau_b(x, y), atol=1e-15)


def test_constant_side_gives_nan():
    x = np.arange(5.0)
    assert np.isnan(kendall_tau_b(x, np.ones(5)))
    assert np.isnan(pearson_r(np.ones(5), x))
    c = correlate(x, np.ones(5))
    assert np.isnan(c.kendall.value) and np.isnan(c.pearson.high)


def test_nan_pairs_are_dropped():
    x = np.array([1.0, 2, np.nan, 4, 5, 6])
    y = np.array([1.0, 2, 3, np.nan, 6, 5])
    c = correlate(x, y, n_resamples=0)
    assert c.n == 4
    assert c.kendall.value == pytest.approx(stats.kendalltau([1, 2, 5, 6], [1, 2, 6, 5]).statistic)


def test_bad_input_is_one_line_error():
    with pytest.raises(DataError, match="3 values, generalization 2"):
        correlate([1, 2, 3], [1, 2])
    with pytest.raises(FlatvolError, match="confidence_level"):
        correlate([1, 2, 3], [1, 2, 3], confidence_level=95)


# --- bootstrap ----------------------------------------------------------------------------------


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.6 * x + rng.normal(size=n)


def test_bootstrap_ci_covers_estimate_and_is_deterministic():
    x, y = _noisy(40, 3)
    a = correlate(x, y, n_resamples=500, seed=7)
    b = correlate(x, y, n_resamples=500, seed=7)
    c = correlate(x, y, n_resamples=500, seed=8)
    assert a == b
    for name in ("kendall", "spearman", "pearson"):
        est = getattr(a, name)
        assert est.low < est.value < est.high
        assert getattr(c, name).low != est.low  # the seed matters
    # sanity of the width: a 40-point Pearson CI at r ~ 0.5 is roughly +-0.25
    assert 0.2 < a.pearson.high - a.pearson.low < 0.8


def test_bootstrap_matches_scipy_with_scipys_own_statistic():
    # Same resampling (same rng seed and batch) with scipy's kendalltau as a non-vectorized
    # statistic must give the same BCa interval as our vectorized tau-b.
    rng = np.random.default_rng(5)
    x = rng.integers(0, 8, 25).astype(float)
    y = x + rng.integers(-3, 4, 25)
    ours = correlate(x, y, n_resamples=300, seed=11)
    ref = stats.bootstrap((x, y), lambda a, b: stats.kendalltau(a, b).statistic, paired=True,
                          vectorized=False, n_resamples=300, batch=300, method="BCa",
                          rng=np.random.default_rng(11))
    assert ours.kendall.low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert ours.kendall.high == pytest.approx(ref.confidence_interval.high, abs=1e-12)


def test_degenerate_bootstrap_falls_back_to_percentiles():
    # A perfectly monotone relation: every resample has tau = 1, BCa is undefined.
    x = np.arange(12.0)
    c = correlate(x, np.exp(x), n_resamples=200)
    assert c.kendall.value == pytest.approx(1.0)
    assert (c.kendall.low, c.kendall.high) == (1.0, 1.0)


# --- granulated Kendall -------------------------------------------------------------------------


def _grid(**axes) -> pd.DataFrame:
    return pd.DataFrame(list(itertools.product(*axes.values())), columns=list(axes))


def test_granulated_kendall_concordant_within_attack_discordant_across_seeds():
    # g = -10a + s, m = -10a - s: along attack (seed fixed) m and g agree perfectly
    # (psi_attack = 1); along seed (attack fixed) they disagree perfectly (psi_seed = -1), so
    # Psi = 0. Overall: the 12 same-attack pairs are discordant, the 54 others concordant:
    # tau = (54 - 12) / 66 = 7/11.
    runs = _grid(attack_size=[0, 100, 200, 300], seed=[0, 1, 2])
    runs["test_acc_E"] = -10 * runs.attack_size + runs.seed
    runs["log10_volume"] = -10 * runs.attack_size - runs.seed
    gk = granulated_kendall(runs, "log10_volume")
    assert gk.per_axis == pytest.approx({"attack_size": 1.0, "seed": -1.0})
    assert gk.psi == pytest.approx(0.0, abs=1e-15)
    assert gk.groups == {"attack_size": 3, "seed": 4}
    assert kendall_tau_b(runs.log10_volume, runs.test_acc_E) == pytest.approx(7 / 11)


def test_granulated_kendall_three_axes():
    # Adding an optimizer axis along which m and g always disagree: psi = (1, -1, -1),
    # Psi = -1/3. An axis with a single value (data_seed) does not count.
    runs = _grid(attack_size=[0, 1, 2], seed=[0, 1], optimizer=["adam", "sgd"])
    adam = (runs.optimizer == "adam").astype(float)
    runs["test_acc_E"] = -10 * runs.attack_size + runs.seed - 100 * adam
    runs["log10_volume"] = -10 * runs.attack_size - runs.seed + 100 * adam
    runs["data_seed"] = 0
    gk = granulated_kendall(runs, "log10_volume",
                            axes=("attack_size", "seed", "optimizer", "data_seed"))
    assert gk.axes == ("attack_size", "seed", "optimizer")
    assert gk.per_axis == pytest.approx({"attack_size": 1.0, "seed": -1.0, "optimizer": -1.0})
    assert gk.psi == pytest.approx(-1 / 3)


def _reference_granulated(runs, m, g, axes):
    """Jiang et al. (2019) eq. (4)-(5), written directly with loops and scipy."""
    axes = [a for a in axes if runs[a].nunique() > 1]
    psis = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        taus = []
        for values in itertools.product(*(sorted(runs[o].unique()) for o in others)):
            mask = np.ones(len(runs), bool)
            for o, v in zip(others, values, strict=True):
                mask &= (runs[o] == v).to_numpy()
            if mask.sum() >= 2:
                t = stats.kendalltau(runs.loc[mask, m], runs.loc[mask, g]).statistic
                if np.isfinite(t):
                    taus.append(t)
        psis.append(np.mean(taus))
    return np.mean(psis), dict(zip(axes, psis, strict=True))


def test_granulated_kendall_matches_direct_definition_on_random_ragged_grid():
    rng = np.random.default_rng(0)
    runs = _grid(attack_size=range(0, 500, 50), seed=range(4), optimizer=["sgd", "adam", "sam"])
    runs = runs.sample(frac=0.85, random_state=1).reset_index(drop=True)  # missing runs
    runs["test_acc_E"] = rng.normal(size=len(runs)) - 0.002 * runs.attack_size
    runs["log10_sharpness"] = rng.normal(size=len(runs)) + 0.001 * runs.attack_size
    runs["m"] = -runs["log10_sharpness"]
    psi, per_axis = _reference_granulated(runs, "m", "test_acc_E",
                                          ["attack_size", "seed", "optimizer"])
    gk = granulated_kendall(runs, "log10_sharpness")
    assert gk.psi == pytest.approx(psi, abs=1e-12)
    assert gk.per_axis == pytest.approx(per_axis, abs=1e-12)


def test_granulated_kendall_skips_singletons_and_constant_groups():
    runs = _grid(attack_size=[0, 1, 2], seed=[0, 1])
    runs["test_acc_E"] = [0.9, 0.9, 0.8, 0.7, 0.6, 0.5]  # seed pair at attack 0 tied in g
    runs["log10_volume"] = [3.0, 2, 1, 0, -1, -2]
    runs = runs.drop(index=5)  # attack 2 has a single seed
    gk = granulated_kendall(runs, "log10_volume")
    assert gk.skipped == {"attack_size": 0, "seed": 2}
    assert gk.groups["seed"] == 1  # only attack 1 (0.8 vs 0.7, m 1 vs 0): tau = 1
    assert gk.per_axis["seed"] == pytest.approx(1.0)


# --- the table ----------------------------------------------------------------------------------


def test_correlation_table_orientation_filtering_and_groups(runs):
    table = correlation_table(runs, n_resamples=100)
    assert list(table["measure"][:3]) == ["log10_volume", "log10_volume_conditional",
                                          "log10_sharpness"]
    fitted = fitted_runs(runs)
    assert len(fitted) == len(runs) - 2  # one failed, one did not fit
    assert (table["n"] == len(fitted)).all()
    row = table.set_index("measure").loc["log10_sharpness"]
    # -log10 sharpness is the oriented measure: positive tau with accuracy
    expected = stats.kendalltau(-fitted.log10_sharpness, fitted.test_acc_E).statistic
    assert row["kendall"] == pytest.approx(expected) and expected > 0
    assert {"kendall_low", "kendall_high", "kendall_p", "granulated_kendall",
            "psi_attack_size", "psi_seed", "psi_optimizer"} <= set(table.columns)
    by = correlation_table(runs, by="optimizer", measures=["log10_volume"], n_resamples=0)
    assert list(by["optimizer"]) == ["adam", "sgd"]
    assert "psi_optimizer" not in by.columns


def test_log_measures_drop_nonpositive_values():
    runs = pd.DataFrame({"test_acc_E": [0.9, 0.8, 0.7, 0.6, 0.5],
                         "hessian_trace": [1.0, 2.0, -0.5, 8.0, 16.0]})
    table = correlation_table(runs, n_resamples=0)
    assert table.loc[0, "measure"] == "hessian_trace"
    assert table.loc[0, "n"] == 4 and table.loc[0, "kendall"] == pytest.approx(1.0)


def test_custom_measure_and_errors(runs):
    m = Measure("epochs_neg", "epochs", "-epochs", sign=-1)
    table = correlation_table(runs, measures=[m, "seed"], n_resamples=0)
    assert list(table["measure"]) == ["epochs_neg", "seed"]
    with pytest.raises(DataError, match="no column 'nope'"):
        correlation_table(runs, measures=["nope"])
    with pytest.raises(DataError, match="generalization column 'gen'"):
        correlation_table(runs, generalization="gen")
    with pytest.raises(DataError, match="none of the known measure columns"):
        correlation_table(runs[["optimizer", "test_acc_E", "status"]])
    with pytest.raises(DataError, match="no fitted runs"):
        correlation_table(runs.assign(status="failed"))


def test_constant_measures_and_unvaried_axes_are_left_out(runs):
    # A PAC-Bayes bound that depends only on S is the same for every run: no ranking to test.
    one_optimizer = runs[runs.optimizer == "sgd"].assign(pac_bayes_bound=0.36)
    table = correlation_table(one_optimizer, n_resamples=0)
    assert "pac_bayes_bound" not in set(table["measure"])
    assert [m.key for m in constant_measures(fitted_runs(one_optimizer))] == [
        "pac_bayes_bound"]
    assert "psi_optimizer" not in table.columns  # a single optimizer is not a sweep axis
    assert {"psi_attack_size", "psi_seed"} <= set(table.columns)
    # asked for explicitly, a constant measure gets a row of NaNs rather than an error
    row = correlation_table(one_optimizer, measures=["pac_bayes_bound"], n_resamples=0).iloc[0]
    assert np.isnan(row["kendall"]) and row["n"] == len(fitted_runs(one_optimizer))
