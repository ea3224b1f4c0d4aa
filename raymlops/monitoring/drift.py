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

Cost per check, for n window rows: the numeric columns are sorted once, together; per feature the
sorted window merges with the reference sample (sorted once per profile) in linear time, without a
sort (``_merged_gaps``), and KS, the Wasserstein distance and the PSI bin counts all follow from the
merged CDFs; the KS p-values come in one vectorised call. Categorical columns of Arrow text (pandas'
default string type) are matched against the reference categories in one Arrow hash lookup; other
columns are counted raw and only their distinct values named. The statistics equal scipy's
``ks_2samp(method="asymp")``, ``wasserstein_distance``, ``chisquare`` and ``jensenshannon`` (unit
tests check them on the same data). ``benchmarks/monitor_bench.py``: 7.9 ms for 10,000 rows x 20
features against 85.8 ms for a plain per-feature scipy loop (10.9x, 2-core machine, December 2026).

Example::

    report = detect_drift(profile, window_frame, alpha=0.01)
    report.drifted                 # ["temp", "wind_speed"]
    report.features["temp"].psi
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import special, stats

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


@lru_cache(maxsize=16)
def _ranks(n: int) -> tuple[np.ndarray, np.ndarray]:
    """0..n-1 and the empirical CDF 1/n..1 of n sorted values (read-only, shared between checks)."""
    positions, cdf = np.arange(n), np.arange(1, n + 1) / n
    positions.flags.writeable = cdf.flags.writeable = False
    return positions, cdf


def _merged_gaps(sample: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both samples merged in order, and the gap between their empirical CDFs at every merged point.

    Two sorted runs merge without a sort: ``b[i]``, the live values below reference value ``i``, is one
    ``searchsorted`` of the small reference into the window, and its running histogram gives the
    reference values at or below each live value. Each value's merged position is its own rank plus the
    other side's count below it (reference values first on ties), so the CDFs at each point follow by
    scatter. At the last point of every run of ties the gap is that of the right-continuous CDFs.
    """
    m, n = len(sample), len(live)
    (ref_positions, ref_cdf), (live_positions, live_cdf) = _ranks(m), _ranks(n)
    below = np.searchsorted(live, sample, side="left")
    at_or_below = np.bincount(below, minlength=n + 1)[:n].cumsum()
    points, gaps = np.empty(m + n), np.empty(m + n)
    live_at, ref_at = live_positions + at_or_below, ref_positions + below
    points[live_at], points[ref_at] = live, sample
    gaps[live_at] = at_or_below * (1.0 / m) - live_cdf
    gaps[ref_at] = ref_cdf - below * (1.0 / n)
    return points, gaps


def numeric_drifts(names: list[str], refs: list[dict[str, Any]], window: np.ndarray) -> list[FeatureDrift]:
    """KS, Wasserstein and PSI of every numeric feature; ``window`` is [rows, features], NaN missing.

    The window is sorted once (all columns together). Per feature, ``_merged_gaps`` merges its sorted
    values with the reference sample (kept sorted in the profile) in linear time; the largest gap at a
    point where the value changes is the KS statistic, the gaps times the steps between points sum to the
    Wasserstein distance (both as scipy computes them), and ``searchsorted`` of the few bin edges in the
    sorted values gives the PSI bin counts. The p-values come in one vectorised call.
    """
    return _numeric_drifts(names, refs, np.array(window.T, dtype=float, order="C"))


def _numeric_drifts(names: list[str], refs: list[dict[str, Any]], columns: np.ndarray) -> list[FeatureDrift]:
    """``numeric_drifts`` on a [features, rows] array of its own, sorted in place."""
    n = columns.shape[1]
    present_counts = (~np.isnan(columns)).sum(axis=1)
    columns.sort(axis=1)  # NaN last
    fields: list[list[Any]] = []
    tested, ks_values, sizes = [], [], []
    for j, (name, ref) in enumerate(zip(names, refs, strict=True)):
        sample, edges, shares = _reference_arrays(ref)
        live = columns[j, : present_counts[j]]
        missing = float(1 - len(live) / n) if n else 0.0
        if len(live) == 0 or len(sample) == 0:
            fields.append([name, "numeric", n, "ks", 0.0, 1.0, 0.0, 0.0, missing, 0.0])
            continue
        points, gaps = _merged_gaps(sample, live)
        steps = np.diff(points)
        gaps = np.abs(gaps, out=gaps)
        ks = max(float(gaps[:-1][steps != 0].max(initial=0.0)), float(gaps[-1]))  # where the value changes
        scale = ref.get("std") or float(sample.std()) or 1.0
        distance = float(gaps[:-1] @ steps) / scale
        lo, hi = ref.get("min"), ref.get("max")  # profiles written before the range was kept have neither
        # values below an edge fall in the bins under it; below the training minimum is outside the range
        cuts = np.searchsorted(live, edges if lo is None else np.append(edges, lo), side="left")
        counts = np.diff(cuts[: len(edges)], prepend=0, append=len(live))
        index = psi(shares, counts / len(live))
        outside = 0.0
        if lo is not None and hi is not None:
            outside = float((cuts[-1] + len(live) - np.searchsorted(live, hi, side="right")) / len(live))
        fields.append([name, "numeric", n, "ks", ks, 1.0, index, distance, missing, outside])
        tested.append(j)
        ks_values.append(ks)
        big, small = max(len(sample), len(live)), min(len(sample), len(live))
        sizes.append(np.round(big * small / (big + small)))
    if tested:  # scipy's ks_2samp(method="asymp"), two-sided, for all features at once
        p_values = np.clip(stats.kstwo.sf(np.asarray(ks_values), np.asarray(sizes)), 0, 1)
        for j, p in zip(tested, p_values, strict=True):
            fields[j][5] = float(p)
    return [FeatureDrift(*f) for f in fields]


_CATEGORIES: dict[int, tuple[dict[str, Any], dict[str, int], pa.Array, np.ndarray]] = {}


def _reference_categories(ref: dict[str, Any]) -> tuple[dict[str, int], pa.Array, np.ndarray]:
    """A categorical reference's cell of each category (as a dict and as an Arrow value set) and the
    expected shares (categories, "other", "missing"), made once per profile like ``_reference_arrays``."""
    hit = _CATEGORIES.get(id(ref))
    if hit is None or hit[0] is not ref:
        if len(_CATEGORIES) > 512:
            _CATEGORIES.clear()
        cats = list(ref["shares"])
        shares = np.clip(np.asarray([ref["shares"][c] for c in cats] + [ref.get("other", 0.0),
                                                                       ref.get("missing", 0.0)], float), 0, None)
        hit = (ref, {c: i for i, c in enumerate(cats)}, pa.array(cats, pa.string()), shares / shares.sum())
        _CATEGORIES[id(ref)] = hit
    return hit[1], hit[2], hit[3]


def _category_counts(values: pd.Series | np.ndarray, cell_of: dict[str, int], categories: pa.Array,
                     cells: int) -> np.ndarray:
    """Rows per reference category, then "other" (unseen), then "missing".

    Arrow-backed text (pandas' default string type) is matched against the categories in one Arrow
    hash lookup; anything else is counted raw (hashing, no text conversion) and only the few distinct
    values are named as the profile named them (as text): the same counts as converting every value.
    """
    observed = np.zeros(cells)
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
        text = pa.array(values)  # the Series' own Arrow data (an Array or a ChunkedArray), no copy
        if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
            text = text.cast(pa.string())
        found = pc.index_in(text, value_set=categories.cast(text.type))  # a few values, not the window
        observed[: cells - 2] = np.bincount(pc.drop_null(found).to_numpy(zero_copy_only=False),
                                            minlength=cells - 2)
        observed[-1] = text.null_count
        observed[-2] = len(text) - observed[: cells - 2].sum() - observed[-1]
        return observed
    codes, uniques = pd.factorize(np.asarray(values, dtype=object) if not isinstance(values, pd.Series) else values,
                                  use_na_sentinel=True)
    counts = np.bincount(codes + 1, minlength=len(uniques) + 1)  # missing first, then each distinct value
    for text_, count in zip(_as_text(uniques), counts[1:].tolist(), strict=True):
        observed[cell_of.get(text_, cells - 2)] += count
    observed[-1] = counts[0]
    return observed


def _as_text(uniques: Any) -> list[str]:
    """The distinct window values named as the profile named them (``astype("string")``)."""
    values = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)
    if all(type(v) is str for v in values):
        return values
    return [str(v) for v in pd.Index(uniques).astype("string")]


def _jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q)`` (natural log) without its per-call checks."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2
    return float(np.sqrt(max(0.0, (special.rel_entr(p, m).sum() + special.rel_entr(q, m).sum()) / 2)))


def categorical_drift(name: str, ref: dict[str, Any], values: pd.Series | np.ndarray) -> FeatureDrift:
    n = len(values)
    if n == 0:
        return FeatureDrift(name, "categorical", 0, "chi2", 0.0, 1.0, 0.0, 0.0, 0.0)
    cell_of, categories, expected_share = _reference_categories(ref)
    observed = _category_counts(values, cell_of, categories, len(expected_share))
    missing, other = float(observed[-1]), float(observed[-2])
    index = psi(expected_share, observed / n)
    distance = _jensen_shannon(np.clip(expected_share, _EPS, None), np.clip(observed / n, _EPS, None))
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
    columns = np.empty((len(numeric), len(window)))  # a row per feature: the layout the sort wants
    for j, f in enumerate(numeric):
        column = window[f] if pd.api.types.is_numeric_dtype(window[f]) else pd.to_numeric(window[f], errors="coerce")
        columns[j] = column.to_numpy(dtype=float, na_value=np.nan)
    by_name = {d.feature: d for d in _numeric_drifts(numeric, [refs[f] for f in numeric], columns)}
    by_name |= {f: categorical_drift(f, refs[f], window[f]) for f in names if refs[f]["kind"] != "numeric"}
    raw = [by_name[f] for f in names]
    adjusted = adjust_p_values([d.p_value for d in raw], correction)
    result = {}
    for d, p_adj in zip(raw, adjusted, strict=True):
        drifted = bool(p_adj < alpha and d.psi >= min_psi)
        result[d.feature] = replace(d, adjusted_p=float(p_adj), drifted=drifted)
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
