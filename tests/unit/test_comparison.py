"""Champion vs challenger on labelled rows: intervals that cover the truth, and verdicts noise cannot fool."""

from __future__ import annotations

import math
import time
from statistics import NormalDist

import numpy as np
import pytest
from sklearn import metrics as skm

from raymlops.config import ComparisonConfig, RetrainingConfig
from raymlops.loop.policy import canary_decision, rollback_decision
from raymlops.model.metrics import classification_metrics
from raymlops.training import evaluation as ev
from raymlops.training.comparison import _counts, _metric, compare, compare_unpaired


def binormal(rng: np.random.Generator, n: int, mu_a: float, mu_b: float, rho: float = 0.6):
    """Labels and two models' scores with known AUCs: score = mu * y + N(0, 1), so AUC = Phi(mu / sqrt 2);
    the models' noise is correlated (rho), as two models of the same rows are."""
    y = (rng.random(n) < 0.3).astype(float)
    e = rng.normal(size=n)
    a = mu_a * y + e
    b = mu_b * y + rho * e + math.sqrt(1 - rho ** 2) * rng.normal(size=n)
    return y, a, b


def true_auc(mu: float) -> float:
    return NormalDist().cdf(mu / math.sqrt(2))


@pytest.mark.parametrize("test", ["bootstrap", "delong"])
def test_paired_interval_covers_the_true_difference_at_about_its_rate(test):
    truth = true_auc(0.9) - true_auc(0.8)
    covered, runs = 0, 200
    for seed in range(runs):
        y, a, b = binormal(np.random.default_rng(seed), 1500, 0.8, 0.9)
        c = compare("auc", y, a, b, alpha=0.1, resamples=400, test=test, seed=seed)
        covered += c.low <= truth <= c.high
    assert 0.84 <= covered / runs <= 0.96, f"{covered}/{runs} intervals covered the truth, expected ~90%"


def test_unpaired_interval_covers_the_true_difference_at_about_its_rate():
    truth = true_auc(1.0) - true_auc(0.8)
    covered, runs = 0, 150
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        ya, a, _ = binormal(rng, 1200, 0.8, 0.8)
        yb, _, b = binormal(rng, 800, 1.0, 1.0)
        c = compare_unpaired("auc", ya, a, yb, b, alpha=0.1, resamples=400, seed=seed)
        covered += c.low <= truth <= c.high
    assert 0.83 <= covered / runs <= 0.97, f"{covered}/{runs} intervals covered the truth, expected ~90%"


def test_too_few_rows_wait_and_say_why():
    y, a, b = binormal(np.random.default_rng(0), 150, 0.5, 2.0)
    c = compare("auc", y, a, b, min_samples=200)
    assert c.verdict == "wait" and c.n == 150 and math.isnan(c.low) and c.judge(">=", 0.0) == "unsure"
    assert "150 rows < 200" in c.describe()
    assert compare_unpaired("auc", y, a, y[:50], b[:50], min_samples=100).verdict == "wait"


def test_two_models_of_the_same_quality_are_the_same():
    y, a, b = binormal(np.random.default_rng(3), 6500, 0.8, 0.8)
    c = compare("auc", y, a, b)
    assert c.verdict == "same" and c.low < 0 < c.high and c.p_value > 0.05, c.describe()
    identical = compare("auc", y, a, a.copy())
    assert identical.verdict == "same" and identical.estimate == 0 and identical.p_value == 1.0


def test_a_clearly_better_model_is_better_and_the_reverse_worse():
    y, a, b = binormal(np.random.default_rng(4), 6500, 0.6, 1.0)
    for test in ("bootstrap", "delong"):
        c = compare("auc", y, a, b, test=test)
        assert c.verdict == "better" and c.low > 0 and c.p_value < 0.01 and c.test.startswith("paired")
        assert compare("auc", y, b, a, test=test).verdict == "worse"
    assert compare_unpaired("auc", y, a, y, b).verdict == "better"


def test_lower_is_better_metrics_read_the_right_way_round():
    rng = np.random.default_rng(5)
    y = rng.normal(100, 20, 3000)
    good, bad = y + rng.normal(0, 5, 3000), y + rng.normal(0, 8, 3000)
    for metric in ("rmse", "mae"):
        c = compare(metric, y, bad, good)
        assert c.estimate < 0 and c.verdict == "better", c.describe()
        assert c.judge("<=", 0.0) == "meets" and c.judge("<=", -10.0) == "fails"
    assert compare("r2", y, bad, good).verdict == "better"


def test_paired_is_narrower_than_unpaired_on_the_same_rows():
    y, a, b = binormal(np.random.default_rng(6), 5000, 0.8, 0.85, rho=0.9)
    paired, unpaired = compare("auc", y, a, b), compare_unpaired("auc", y, a, y, b)
    assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)
    assert unpaired.test.startswith("unpaired")


def test_weighted_metrics_equal_scikit_learn_on_the_resampled_rows():
    rng = np.random.default_rng(7)
    y = (rng.random(500) < 0.4).astype(float)
    p = np.round(np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1), 2)  # rounded: ties
    w = _counts(rng, 3, 500)
    for r in range(3):
        rows = np.repeat(np.arange(500), w[r].astype(int))
        yr, pr = y[rows], p[rows]
        assert _metric("auc", y, p, w)[r] == pytest.approx(skm.roc_auc_score(yr, pr), abs=1e-9)
        assert _metric("log_loss", y, p, w)[r] == pytest.approx(skm.log_loss(yr, np.clip(pr, 1e-7, 1 - 1e-7)))
        assert _metric("accuracy", y, p, w)[r] == pytest.approx(skm.accuracy_score(yr, pr >= 0.5))
        assert _metric("f1", y, p, w)[r] == pytest.approx(skm.f1_score(yr, pr >= 0.5))
        assert _metric("rmse", y, p, w)[r] == pytest.approx(math.sqrt(skm.mean_squared_error(yr, pr)))
        assert _metric("r2", y, p, w)[r] == pytest.approx(skm.r2_score(yr, pr))


def test_seeded_and_fast():
    y, a, b = binormal(np.random.default_rng(8), 10_000, 0.8, 0.9)
    compare("auc", y[:1000], a[:1000], b[:1000])  # warm up
    t0 = time.perf_counter()
    c = compare("auc", y, a, b, resamples=1000, seed=1)
    seconds = time.perf_counter() - t0
    assert c == compare("auc", y, a, b, resamples=1000, seed=1)
    assert seconds < 2.0, f"10,000 rows x 1,000 resamples took {seconds:.2f} s"  # ~0.5 s on 2 busy cores


def test_unknown_metric_or_unequal_rows_are_refused():
    with pytest.raises(ValueError, match="pr_auc"):
        compare("pr_auc", np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="same rows"):
        compare("auc", np.ones(3), np.ones(3), np.ones(4))


# ------------------------------------------------------------------------------------ gates
def _gate_comparisons(y, a, b, **kw):
    return ev.champion_comparisons(["auc >= champion - 0.005"], "classification", y, b, a, ComparisonConfig(**kw))


def test_a_champion_gate_inside_the_noise_passes_and_says_so():
    y, a, b = binormal(np.random.default_rng(9), 6500, 0.8, 0.8)
    metrics, champion = classification_metrics(y, b), classification_metrics(y, a)
    comparisons = _gate_comparisons(y, a, b)
    c = comparisons["auc"]
    assert c.verdict == "same"
    (r,) = ev.evaluate_gates(["auc >= champion + 0.005"], metrics, champion, comparisons)
    assert r.passed and "inside the noise" in r.detail and "paired bootstrap" in r.detail
    assert r.comparison["gate_verdict"] == "unsure" and r.comparison["n"] == 6500
    assert ev.as_plain([r])[0]["comparison"]["low"] == c.low  # evaluation.json keeps the interval


def test_a_champion_gate_fails_when_the_whole_interval_breaks_it():
    y, a, b = binormal(np.random.default_rng(10), 6500, 1.0, 0.6)
    metrics, champion = classification_metrics(y, b), classification_metrics(y, a)
    (r,) = ev.evaluate_gates(["auc >= champion - 0.005"], metrics, champion, _gate_comparisons(y, a, b))
    assert not r.passed and "fails" in r.detail and "CI" in r.detail


def test_a_small_test_split_falls_back_to_point_values_and_says_so():
    y, a, b = binormal(np.random.default_rng(11), 100, 0.8, 0.8)
    metrics, champion = classification_metrics(y, b), classification_metrics(y, a)
    (r,) = ev.evaluate_gates(["auc >= champion - 0.005"], metrics, champion, _gate_comparisons(y, a, b))
    assert "point values: 100 rows < 200" in r.detail and r.passed == (metrics["auc"] >= champion["auc"] - 0.005)
    assert ev.champion_comparisons(["auc >= champion"], "classification", y, b, a,
                                   ComparisonConfig(enabled=False)) == {}


# ----------------------------------------------------------------------------------- policy
R = RetrainingConfig(enabled=True, canary_min_samples=100, rollback_min_samples=100, max_wait_s=3600)


def _live(rng, n, mu):
    y, s, _ = binormal(rng, n, mu, mu)
    return y, s, classification_metrics(y, 1 / (1 + np.exp(-s)))


def test_a_canary_inside_the_noise_waits_then_the_champion_stays():
    rng = np.random.default_rng(12)
    ya, a, qa = _live(rng, 1000, 0.8)
    yb, b, qb = _live(rng, 400, 0.8)
    c = compare_unpaired("auc", ya, a, yb, b, min_samples=100)
    d = canary_decision(R, qa, qb, 400, 0.0, c, waited_s=60)
    assert d.action == "wait" and "inside the noise" in d.blocked_by[0] and "unpaired bootstrap" in d.blocked_by[0]
    assert d.evidence["comparison"]["n"] == 400 and d.evidence["comparison"]["low"] < 0
    late = canary_decision(R, qa, qb, 400, 0.0, c, waited_s=3600)
    assert late.action == "discard" and "the champion stays" in late.reasons[0]
    # after_wait 'challenger': a challenger not shown worse takes over once the wait is over, not before.
    fresh = R.model_copy(update={"after_wait": "challenger"})
    assert canary_decision(fresh, qa, qb, 400, 0.0, c, waited_s=60).action == "wait"
    taken = canary_decision(fresh, qa, qb, 400, 0.0, c, waited_s=3600)
    assert taken.action == "promote" and "retraining.after_wait" in taken.reasons[0]
    yw, w, qw = _live(rng, 1000, 0.1)
    assert canary_decision(fresh, qa, qw, 1000, 0.0, compare_unpaired("auc", ya, a, yw, w),
                           waited_s=3600).action == "discard"  # shown worse: never promoted by waiting


def test_a_clearly_better_canary_is_promoted_and_a_clearly_worse_one_discarded():
    rng = np.random.default_rng(13)
    ya, a, qa = _live(rng, 1000, 0.6)
    yb, b, qb = _live(rng, 1000, 1.4)
    assert canary_decision(R, qa, qb, 1000, 0.0, compare_unpaired("auc", ya, a, yb, b)).action == "promote"
    worse = canary_decision(R, qb, qa, 1000, 0.0, compare_unpaired("auc", yb, b, ya, a))
    assert worse.action == "discard" and "fails" in worse.reasons[0]


def test_a_rollback_needs_the_interval_and_keeps_after_the_wait():
    rng = np.random.default_rng(14)
    ya, a, qa = _live(rng, 1000, 0.8)
    yb, b, qb = _live(rng, 400, 0.78)
    c = compare_unpaired("auc", ya, a, yb, b, min_samples=100)
    assert rollback_decision(R, qb, qa, 400, 100, 0.0, c, waited_s=10).action == "wait"
    assert rollback_decision(R, qb, qa, 400, 100, 0.0, c, waited_s=4000).action == "keep"
    yw, w, qw = _live(rng, 1000, 0.2)
    lost = rollback_decision(R, qw, qa, 1000, 100, 0.0, compare_unpaired("auc", ya, a, yw, w))
    assert lost.action == "rollback" and "CI" in lost.reasons[0]


def test_a_comparison_with_too_few_rows_on_either_side_waits():
    rng = np.random.default_rng(15)
    ya, a, qa = _live(rng, 50, 0.8)
    yb, b, qb = _live(rng, 400, 2.0)
    c = compare_unpaired("auc", ya, a, yb, b, min_samples=100)
    d = canary_decision(R, qa, qb, 400, 0.0, c)
    assert d.action == "wait" and "50 rows < 100" in d.blocked_by[0]
    assert rollback_decision(R, qb, qa, 400, 100, 0.0, c).action == "wait"


def _clustered(seed: int, days: int = 30, per_day: int = 100):
    """Two exchangeable models whose quality moves with the day (a day's weather favours one or the other):
    the true difference is 0 by symmetry, but rows of one day are not independent."""
    r = np.random.default_rng(seed)
    day = np.repeat(np.arange(days), per_day)
    y = r.integers(0, 2, days * per_day)
    lift_a, lift_b = r.normal(0, 0.6, days)[day], r.normal(0, 0.6, days)[day]
    return y, y * (1 + lift_a) + r.normal(size=len(y)), y * (1 + lift_b) + r.normal(size=len(y)), day


def test_resampling_whole_days_covers_a_day_clustered_difference_where_rows_do_not():
    rows_cover = days_cover = 0
    for seed in range(60):
        y, a, b, day = _clustered(seed)
        rows = compare("auc", y, a, b, alpha=0.1, resamples=300, seed=seed)
        days = compare("auc", y, a, b, alpha=0.1, resamples=300, seed=seed, groups=day)
        rows_cover += rows.low <= 0 <= rows.high
        days_cover += days.low <= 0 <= days.high
        assert days.test == "paired bootstrap of 30 groups (300 resamples)"
    print(f"\ncoverage of the true difference at 90%: rows {rows_cover / 60:.0%}, days {days_cover / 60:.0%}")
    assert days_cover >= 0.8 * 60 and rows_cover <= 0.7 * 60


def test_day_groups_are_utc_days():
    import pandas as pd

    from raymlops.training.comparison import day_groups

    t = pd.Series(pd.to_datetime(["2013-01-01 00:00", "2013-01-01 23:59", "2013-01-02 00:00"], utc=True))
    g = day_groups(t.astype("datetime64[us, UTC]"))
    assert g[0] == g[1] != g[2] and g[2] - g[0] == 1
