"""Drift statistics: false alarms on unchanged data stay within alpha; real shifts are found in one window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raymlops.monitoring.drift import adjust_p_values, detect_drift, psi
from raymlops.monitoring.profiles import build_reference_profile

NUMERIC = [f"x{i}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
LEVELS = np.array(["a", "b", "c", "d", "e"])
PROBS = np.array([0.4, 0.25, 0.15, 0.12, 0.08])


def _frame(rng: np.random.Generator, n: int, shift: dict[str, float] | None = None,
           probs: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    shift, probs = shift or {}, probs or {}
    data = {c: rng.normal(shift.get(c, 0.0), 1.0, n) for c in NUMERIC[:7]}
    data |= {c: rng.gamma(2.0, 3.0 + shift.get(c, 0.0), n) for c in NUMERIC[7:]}  # skewed, like delays
    data |= {c: rng.choice(LEVELS, n, p=probs.get(c, PROBS)) for c in CATEGORICAL}
    return pd.DataFrame(data)


@pytest.fixture(scope="module")
def profile():
    return build_reference_profile(_frame(np.random.default_rng(0), 50_000), NUMERIC, CATEGORICAL)


def test_false_alarm_rate_on_unchanged_data_stays_within_alpha(profile):
    """200 windows of 2,000 rows drawn from the reference distribution, 20 features each."""
    alpha, windows = 0.05, 200
    alarms = sum(bool(detect_drift(profile, _frame(np.random.default_rng(seed), 2000), alpha=alpha,
                                   min_psi=0.0).drifted) for seed in range(1, windows + 1))
    rate = alarms / windows
    print(f"\nfalse-alarm rate (any of 20 features, Holm, alpha {alpha}): {rate:.3f}")
    # Binomial(200, 0.05) exceeds 0.085 with probability < 1%; Holm keeps the family-wise rate <= alpha.
    assert rate <= 0.085


def test_without_correction_false_alarms_would_exceed_alpha(profile):
    alarms = sum(bool(detect_drift(profile, _frame(np.random.default_rng(seed), 2000), alpha=0.05,
                                   correction="none", min_psi=0.0).drifted) for seed in range(1, 61))
    assert alarms / 60 > 0.2  # why the correction is there: 20 tests at 5% each alarm far more often


@pytest.mark.parametrize(("feature", "window"), [
    ("x2", {"shift": {"x2": 0.4}}),
    ("x9", {"shift": {"x9": 1.5}}),
    ("c3", {"probs": {"c3": np.array([0.25, 0.25, 0.2, 0.15, 0.15])}}),
])
def test_a_shifted_feature_is_found_in_one_window_and_only_it(profile, feature, window):
    report = detect_drift(profile, _frame(np.random.default_rng(99), 2000, **window), alpha=0.01)
    assert report.drifted == [feature]
    assert report.features[feature].psi >= 0.1 and report.features[feature].adjusted_p < 0.01


def test_unseen_categories_and_missing_values_are_measured(profile):
    frame = _frame(np.random.default_rng(5), 1000)
    frame.loc[:299, "c1"] = "zz"
    frame.loc[300:399, "c1"] = None
    d = detect_drift(profile, frame).features["c1"]
    assert d.unseen_share == pytest.approx(0.3) and d.missing_share == pytest.approx(0.1) and d.drifted


def test_numeric_values_outside_the_training_range_are_measured_as_unseen(profile):
    """Requests outside a column's validation range are served (issue 18, item 12), so drift says how much
    of a window lies where the model never saw data."""
    frame = _frame(np.random.default_rng(6), 1000)
    assert detect_drift(profile, frame).features["x0"].unseen_share < 0.01
    frame.loc[:199, "x0"] = profile["features"]["x0"]["max"] + 1.0
    d = detect_drift(profile, frame).features["x0"]
    assert d.unseen_share == pytest.approx(0.2, abs=0.01) and d.drifted


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift():
    base = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(base, base) == pytest.approx(0.0, abs=1e-12)
    assert 0 < psi(base, np.array([0.3, 0.25, 0.25, 0.2])) < psi(base, np.array([0.5, 0.2, 0.2, 0.1]))


def test_holm_adjustment_matches_the_textbook_example():
    assert adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values([0.01, 0.5], "bonferroni") == pytest.approx([0.02, 1.0])


def test_vectorised_numeric_pass_equals_scipy_on_the_same_data():
    """numeric_drifts gives scipy's KS (asymptotic), Wasserstein and the per-bin PSI, ties and NaN included."""
    from scipy import stats

    from raymlops.monitoring.drift import numeric_drifts
    from raymlops.monitoring.profiles import numeric_profile

    rng = np.random.default_rng(3)
    reference = {"normal": rng.normal(0, 1, 5000), "ties": rng.integers(0, 6, 5000).astype(float),
                 "gamma": rng.gamma(2.0, 3.0, 5000), "small": rng.normal(0, 1, 40)}
    window = {"normal": rng.normal(0.2, 1, 3000), "ties": rng.integers(0, 7, 3000).astype(float),
              "gamma": rng.gamma(2.2, 3.0, 3000), "small": rng.normal(0, 1, 3000)}
    window["gamma"][::7] = np.nan
    names = list(reference)
    refs = [numeric_profile(pd.Series(reference[f])) for f in names]
    got = numeric_drifts(names, refs, np.column_stack([window[f] for f in names]))
    for name, ref, d in zip(names, refs, got, strict=True):
        sample, live = np.asarray(ref["sample"]), window[name][~np.isnan(window[name])]
        ks = stats.ks_2samp(sample, live, method="asymp")
        assert d.statistic == pytest.approx(ks.statistic, abs=1e-12), name
        assert d.p_value == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300), name
        assert d.distance == pytest.approx(stats.wasserstein_distance(sample, live) / ref["std"], rel=1e-9), name
        counts = np.bincount(np.searchsorted(ref["edges"], live, side="right"), minlength=len(ref["edges"]) + 1)
        assert d.psi == pytest.approx(psi(np.asarray(ref["shares"]), counts / counts.sum()), rel=1e-12), name
    assert got[2].missing_share == pytest.approx(np.isnan(window["gamma"]).mean())


def test_categorical_chi_square_equals_scipys():
    from scipy import stats

    from raymlops.monitoring.drift import categorical_drift
    from raymlops.monitoring.profiles import categorical_profile

    rng = np.random.default_rng(5)
    ref = categorical_profile(pd.Series(rng.choice(list("abcde"), 5000, p=[0.4, 0.25, 0.15, 0.12, 0.08])))
    live = pd.Series(rng.choice(list("abcdef"), 3000, p=[0.35, 0.25, 0.15, 0.12, 0.08, 0.05]))
    d = categorical_drift("c", ref, live)
    observed = live.value_counts().reindex(list("abcde")).to_numpy(float)
    observed = np.append(observed, (live == "f").sum())  # unseen values: 'other', its own cell (5% > 5 expected?)
    shares = np.asarray([ref["shares"][c] for c in "abcde"])
    # With 'other' and 'missing' expected at 0 they are pooled into the smallest cell, as the code does.
    pooled = observed[:5].copy()
    pooled[np.argmin(shares)] += observed[5]
    expected = shares / shares.sum() * pooled.sum()
    assert d.statistic == pytest.approx(stats.chisquare(pooled, expected).statistic, rel=1e-9)
    assert d.p_value == pytest.approx(stats.chisquare(pooled, expected).pvalue, rel=1e-9, abs=1e-300)
    assert d.unseen_share == pytest.approx(0.05, abs=0.01)
    from scipy.spatial.distance import jensenshannon

    cells = np.append(observed, 0.0) / len(live)  # the five categories, 'other', 'missing'
    reference_cells = np.append(shares / shares.sum(), [0.0, 0.0])
    assert d.distance == pytest.approx(jensenshannon(np.clip(reference_cells, 1e-4, None), np.clip(cells, 1e-4, None)),
                                       rel=1e-12)


def test_categorical_counts_are_the_same_for_arrow_text_objects_and_numbers():
    """The Arrow hash lookup (pandas' default string type) and the raw-count path agree on every field,
    unseen and missing values included; numbers are named as the profile names them (as text)."""
    from raymlops.monitoring.drift import categorical_drift
    from raymlops.monitoring.profiles import categorical_profile

    rng = np.random.default_rng(11)
    values = rng.choice(["a", "b", "c", "d", "z", None], 4000, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    ref = categorical_profile(pd.Series(rng.choice(list("abcd"), 5000)))
    arrow = categorical_drift("c", ref, pd.Series(values, dtype="string[pyarrow]"))
    plain = categorical_drift("c", ref, pd.Series(values, dtype=object))
    assert arrow == plain
    assert arrow.missing_share == pytest.approx(np.mean(values == None), abs=1e-12)  # noqa: E711
    assert arrow.unseen_share == pytest.approx(np.mean(values == "z"), abs=1e-12)
    codes = rng.integers(1, 4, 3000)
    numbers = categorical_profile(pd.Series(codes))
    assert set(numbers["shares"]) == {"1", "2", "3"}
    assert categorical_drift("n", numbers, pd.Series(codes)).psi == pytest.approx(0.0, abs=1e-12)
    assert categorical_drift("n", numbers, pd.Series(codes.astype(str), dtype="string[pyarrow]")).psi == \
        pytest.approx(0.0, abs=1e-12)
