"""Drift statistics: a window of live inputs (or scores) against the training reference profile (pure).

Per numeric feature: PSI over the reference decile bins, the two-sample Kolmogorov-Smirnov test
(``scipy.stats.ks_2samp``) against the reference sample, and the Wasserstein distance in reference
standard deviations. Per categorical feature: PSI and the chi-square goodness-of-fit test
(``scipy.stats.chisquare``) over the reference categories plus "other" (unseen or beyond the cap) and
"missing", the Jensen-Shannon distance, and the share of unseen categories. ``unseen_share`` is the
share of the window somewhere the model never saw: unseen categories, or numeric values outside the
training range (requests outside a column's ``validation`` range are served, and counted here).

A feature drifts when its test rejects after a multiple-testing correction across all features of the
window (Holm by default: the chance of *any* false alarm on unchanged data stays at ``alpha``), and its
PSI is at least ``min_psi`` (large windows make tiny, harmless shifts significant; PSI says how large).

Cost per check, for n window rows: every numeric feature in one vectorised pass (``numeric_drifts``:
one 2-D sort of the window stacked with the reference samples, cumulative counts for both empirical
CDFs, from which KS, the Wasserstein distance and the PSI bin counts all follow), so the cost is a
few numpy calls whatever the number of features; categorical O(n) each (one ``value_counts``). The
statistics equal scipy's ``ks_2samp(method="asymp")`` and ``wasserstein_distance`` (a unit test
checks them on the same data; see ``benchmarks/monitor_bench.py`` for the cost).

Example::

    report = detect_drift(profile, window_frame, alpha=0.01)
    report.drifted                 # ["temp", "wind_speed"]
    report.features["temp"].psi
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special, stats
from scipy.spatial.distance import jensenshannon

Correction = Literal["holm", "bonferroni", "bh", "none"]
_EPS = 1e-4
_MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    rows: int
    test: str
    statistic: float
    p_value: float
    psi: float
    distance: float  # Wasserstein in reference std (numeric) or Jensen-Shannon distance (categorical)
    missing_share: float
    unseen_share: float = 0.0  # categories the reference lacks; numeric: share outside the training range
    adjusted_p: float = 1.0
    drifted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    rows: int
    alpha: float
    correction: str
    min_psi: float
    features: dict[str, FeatureDrift]

    @property
    def drifted(self) -> list[str]:
        return sorted(f for f, d in self.features.items() if d.drifted)

    @property
    def max_psi(self) -> float:
        return max((d.psi for d in self.features.values()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "alpha": self.alpha, "correction": self.correction, "min_psi": self.min_psi,
                "drifted": self.drifted, "features": {f: d.to_dict() for f, d in self.features.items()}}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same cells (smoothed: no log of 0)."""
    e = np.clip(np.asarray(expected, float), _EPS, None)
    a = np.clip(np.asarray(actual, float), _EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_drift(name: str, ref: dict[str, Any], values: pd.Series | np.ndarray) -> FeatureDrift:
    """One numeric feature (the vectorised pass on a single column)."""
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return numeric_drifts([name], [ref], x[:, None])[0]


_PREPARED: dict[int, tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = {}


def _reference_arrays(ref: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A numeric reference's sorted sample, bin edges and shares as arrays, made once per profile (the
    monitor checks the same profile every window). The entry holds the profile itself, so its id cannot
    be reused by another object while cached."""
    hit = _PREPARED.get(id(ref))
    if hit is None or hit[0] is not ref:
        if len(_PREPARED) > 512:
            _PREPARED.clear()
        hit = (ref, np.sort(np.asarray(ref.get("sample") or [], float)), np.asarray(ref.get("edges") or [], float),
               np.asarray(ref.get("shares") or [], float))
        _PREPARED[id(ref)] = hit
    return hit[1], hit[2], hit[3]


def numeric_drifts(names: list[str], refs: list[dict[str, Any]], window: np.ndarray) -> list[FeatureDrift]:
    """KS, Wasserstein and PSI of every numeric feature; ``window`` is [rows, features], NaN missing.

    The window is sorted once (all columns together); per feature, its sorted values are merged with the
    reference sample (kept sorted in the profile), and both empirical CDFs on the merged points give the
    KS statistic and the Wasserstein distance as scipy computes them, and the sorted values give the PSI
    bin counts by ``searchsorted`` of the few bin edges. The p-values come in one vectorised call.
    """
    n = window.shape[0]
    ordered = np.sort(np.ascontiguousarray(window.T), axis=1)  # a contiguous row per feature, NaN last
    present_counts = (~np.isnan(window)).sum(axis=0)
    out, ks_values, sizes = [], [], []
    for j, (name, ref) in enumerate(zip(names, refs, strict=True)):
        sample, edges, shares = _reference_arrays(ref)
        live = ordered[j, : present_counts[j]]
        missing = float(1 - len(live) / n) if n else 0.0
        if len(live) == 0 or len(sample) == 0:
            out.append(FeatureDrift(name, "numeric", n, "ks", 0.0, 1.0, 0.0, 0.0, missing))
            ks_values.append(None)
            sizes.append(None)
            continue
        points = np.concatenate([sample, live])
        points.sort(kind="stable")  # two sorted runs: a linear merge
        gap = np.searchsorted(sample, points, side="right") / len(sample) - np.searchsorted(
            live, points, side="right") / len(live)
        ks = float(np.abs(gap).max())
        scale = ref.get("std") or float(sample.std()) or 1.0
        distance = float(np.dot(np.abs(gap[:-1]), np.diff(points)) / scale)
        cuts = np.searchsorted(live, edges, side="left")  # values below an edge fall in the bins under it
        counts = np.diff(np.concatenate([[0], cuts, [len(live)]]))
        index = psi(shares, counts / counts.sum())
        lo, hi = ref.get("min"), ref.get("max")  # profiles written before the range was kept have neither
        outside = 0.0
        if lo is not None and hi is not None:
            outside = float((np.searchsorted(live, lo, side="left") + len(live)
                             - np.searchsorted(live, hi, side="right")) / len(live))
        out.append(FeatureDrift(name, "numeric", n, "ks", ks, 1.0, index, distance, missing, outside))
        ks_values.append(ks)
        big, small = max(len(sample), len(live)), min(len(sample), len(live))
        sizes.append(np.round(big * small / (big + small)))
    tested = [j for j, k in enumerate(ks_values) if k is not None]
    if tested:  # scipy's ks_2samp(method="asymp"), two-sided, for all features at once
        p_values = np.clip(stats.kstwo.sf(np.asarray([ks_values[j] for j in tested]),
                                          np.asarray([sizes[j] for j in tested])), 0, 1)
        for j, p in zip(tested, p_values, strict=True):
            out[j] = FeatureDrift(**{**asdict(out[j]), "p_value": float(p)})
    return out


def categorical_drift(name: str, ref: dict[str, Any], values: pd.Series | np.ndarray) -> FeatureDrift:
    n = len(values)
    if n == 0:
        return FeatureDrift(name, "categorical", 0, "chi2", 0.0, 1.0, 0.0, 0.0, 0.0)
    cats = list(ref["shares"])
    # Count the raw values (hashing, no text conversion), then name the few distinct ones as the profile
    # did (as text): the same counts as converting every value to text first.
    codes, uniques = pd.factorize(np.asarray(values, dtype=object) if not isinstance(values, pd.Series) else values,
                                  use_na_sentinel=True)
    raw = np.bincount(codes[codes >= 0], minlength=len(uniques))
    by_text: dict[str, float] = {}
    for text_, count in zip(pd.Index(uniques).astype("string"), raw, strict=True):
        by_text[str(text_)] = by_text.get(str(text_), 0.0) + float(count)
    known = np.asarray([by_text.get(c, 0.0) for c in cats], float)
    missing = float((codes < 0).sum())
    other = float(n - known.sum() - missing)
    observed = np.concatenate([known, [other, missing]])
    expected_share = np.concatenate([np.asarray([ref["shares"][c] for c in cats], float),
                                     [ref.get("other", 0.0), ref.get("missing", 0.0)]])
    expected_share = np.clip(expected_share, 0, None)
    expected_share = expected_share / expected_share.sum()
    index = psi(expected_share, observed / n)
    distance = float(jensenshannon(np.clip(expected_share, _EPS, None), np.clip(observed / n, _EPS, None)))
    # Chi-square needs expected counts of at least ~5: pool the rare cells (unseen and missing values
    # included, whose expected count may be 0) into one, and that into the smallest cell if still rare.
    expected = expected_share * n
    rare = expected < _MIN_EXPECTED
    if rare.any():
        pooled_obs, pooled_exp = observed[rare].sum(), expected[rare].sum()
        observed, expected = observed[~rare], expected[~rare]
        if pooled_exp >= _MIN_EXPECTED or len(expected) == 0:
            observed, expected = np.append(observed, pooled_obs), np.append(expected, pooled_exp)
        else:
            smallest = int(np.argmin(expected))
            observed[smallest] += pooled_obs
            expected[smallest] += pooled_exp
    if len(observed) < 2:
        stat, p = 0.0, 1.0
    else:
        expected = expected * observed.sum() / expected.sum()
        # scipy.stats.chisquare's statistic and p-value, without its per-call wrapper (~1 ms a feature)
        stat = float(np.sum((observed - expected) ** 2 / expected))
        p = float(special.chdtrc(len(observed) - 1, stat))
    unseen = other / n if ref.get("other", 0.0) < _EPS else 0.0
    return FeatureDrift(name, "categorical", n, "chi2", float(stat), float(p), index, distance, missing / n,
                        float(unseen))


def adjust_p_values(p_values: list[float], correction: Correction) -> list[float]:
    """Family-wise (Holm, Bonferroni) or false-discovery-rate (Benjamini-Hochberg) adjusted p-values."""
    p = np.asarray(p_values, float)
    m = len(p)
    if m == 0 or correction == "none":
        return p.tolist()
    if correction == "bonferroni":
        return np.minimum(p * m, 1.0).tolist()
    if correction == "bh":
        return stats.false_discovery_control(p, method="bh").tolist()
    order = np.argsort(p)  # Holm step-down
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def detect_drift(profile: dict[str, Any], window: pd.DataFrame, *, alpha: float = 0.01,
                 correction: Correction = "holm", min_psi: float = 0.1,
                 features: list[str] | None = None) -> DriftReport:
    """Compare every profiled feature present in ``window`` with its reference; correct across features."""
    refs = profile["features"]
    names = [f for f in (features or list(refs)) if f in refs and f in window.columns]
    numeric = [f for f in names if refs[f]["kind"] == "numeric"]
    matrix = np.column_stack([pd.to_numeric(window[f], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                              for f in numeric]) if numeric else np.zeros((len(window), 0))
    by_name = {d.feature: d for d in numeric_drifts(numeric, [refs[f] for f in numeric], matrix)}
    by_name |= {f: categorical_drift(f, refs[f], window[f]) for f in names if refs[f]["kind"] != "numeric"}
    raw = [by_name[f] for f in names]
    adjusted = adjust_p_values([d.p_value for d in raw], correction)
    result = {}
    for d, p_adj in zip(raw, adjusted, strict=True):
        drifted = bool(p_adj < alpha and d.psi >= min_psi)
        result[d.feature] = FeatureDrift(**{**asdict(d), "adjusted_p": float(p_adj), "drifted": drifted})
    return DriftReport(rows=len(window), alpha=alpha, correction=correction, min_psi=min_psi, features=result)


def prediction_values(scores: np.ndarray | list[float]) -> np.ndarray:
    """What prediction drift watches: the score, or for a multiclass model's probabilities [n, K] the
    index of the class it predicts (a shift in which classes are predicted)."""
    values = np.asarray(scores, float)
    return values.argmax(axis=1).astype(float) if values.ndim == 2 else values


def score_profile(scores: np.ndarray | list[float]) -> dict[str, Any]:
    """Reference of the model's own scores (for prediction drift), in the numeric profile format."""
    from raymlops.monitoring.profiles import numeric_profile

    return numeric_profile(pd.Series(prediction_values(scores)))


def prediction_drift(reference: dict[str, Any], scores: np.ndarray | list[float]) -> FeatureDrift:
    return numeric_drift("prediction", reference, prediction_values(scores))
