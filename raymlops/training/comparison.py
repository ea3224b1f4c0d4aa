"""Is a challenger better than the champion, or is the difference noise? (pure: numpy and scipy).

On ~6,500 labelled rows one AUC has a standard error near 0.007, so a fixed threshold such as
``auc >= champion - 0.005`` is decided by which rows happened to be drawn. Here the *difference*
(challenger - champion) gets a confidence interval, a p-value and a verdict:

- ``compare`` (paired): both models scored the SAME rows (the training stage's test split). What the
  rows share cancels in the difference, so its interval is much narrower than either model's own.
- ``compare_unpaired``: each model answered its own rows (a canary sends each request to one version,
  so the live windows hold no row scored by both). Only the two samples can be resampled, each on its
  own: a wider interval, and the test is named ``unpaired ...`` in every record.

Tests: a seeded bootstrap (rows resampled with replacement, vectorised as count matrices; percentile
interval) for every metric in ``METRICS``, or DeLong's test for AUC (normal interval from its variance).

Example::

    c = compare("auc", y, champion_scores, challenger_scores, alpha=0.05, min_samples=200)
    c.verdict                 # "better" | "worse" | "same" (inside the noise) | "wait" (too few rows)
    c.judge(">=", -0.005)     # "meets" | "fails" | "unsure": the gate 'auc >= champion - 0.005'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "f1": True, "r2": True,
                    "log_loss": False, "rmse": False, "mae": False, "mse": False}
METRICS = tuple(HIGHER_IS_BETTER)
_CELLS = 4_000_000  # bootstrap cells (resamples x rows) per chunk: a few float arrays of ~32 MB


@dataclass(frozen=True)
class Comparison:
    """challenger - champion on ``metric``, with its (1 - alpha) interval and what that means."""

    metric: str
    champion: float
    challenger: float
    estimate: float           # challenger - champion, in the metric's units
    low: float
    high: float
    p_value: float
    alpha: float
    test: str                 # e.g. "paired bootstrap (1000 resamples)", "unpaired DeLong"
    n: int                    # rows compared (unpaired: the smaller of the two samples)
    n_champion: int
    n_challenger: int
    verdict: str              # better | worse | same | wait
    min_samples: int

    def judge(self, op: str, offset: float) -> str:
        """Whether ``challenger op champion + offset`` holds for the whole interval ("meets"), for none
        of it ("fails"), or the interval straddles the threshold ("unsure": the noise cannot tell)."""
        if self.verdict == "wait" or math.isnan(self.low) or math.isnan(self.high):
            return "unsure"
        if op in (">=", ">"):
            return "meets" if self.low >= offset else "fails" if self.high < offset else "unsure"
        if op in ("<=", "<"):
            return "meets" if self.high <= offset else "fails" if self.low > offset else "unsure"
        return "meets" if self.low >= offset and self.high <= offset else "fails" if (
            self.high < offset or self.low > offset) else "unsure"

    def describe(self) -> str:
        if self.verdict == "wait":
            return (f"{self.metric}: {self.n} rows < {self.min_samples}, too few for a verdict ({self.test}); "
                    f"challenger {self.challenger:.4f}, champion {self.champion:.4f}")
        return (f"{self.metric} challenger - champion = {self.estimate:+.4f}, {1 - self.alpha:.0%} CI "
                f"[{self.low:+.4f}, {self.high:+.4f}], p = {self.p_value:.3g} ({self.test}, n = {self.n}): "
                f"{self.verdict}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(metric: str, y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, *, alpha: float = 0.05,
            min_samples: int = 200, resamples: int = 1000, test: str = "bootstrap", seed: int = 0,
            groups: np.ndarray | None = None) -> Comparison:
    """Paired: ``champion`` and ``challenger`` are the two models' scores of the same rows ``y``.

    ``groups`` (one label per row, e.g. the day a flight departed) makes the bootstrap resample whole
    groups instead of rows: rows of one day share its weather and its delays, so they are not independent,
    and a row bootstrap's interval is too narrow for them (a model "significantly" better one week and
    "significantly" worse the next). DeLong's test assumes independent rows, so with groups the
    bootstrap is used."""
    y, a, b = (np.asarray(v, dtype=float) for v in (y, champion, challenger))
    if not (len(y) == len(a) == len(b)) or (groups is not None and len(groups) != len(y)):
        raise ValueError(f"a paired comparison needs scores of the same rows: {len(y)} labels, "
                         f"{len(a)} champion scores, {len(b)} challenger scores"
                         + (f", {len(groups)} groups" if groups is not None else ""))
    _check(metric, test)
    n = len(y)
    by_champion = np.argsort(a, kind="stable")  # the champion's AUC then needs no reordering per resample
    y, a, b = y[by_champion], a[by_champion], b[by_champion]
    inverse = np.unique(np.asarray(groups)[by_champion], return_inverse=True)[1].ravel() if groups is not None else None
    k = int(inverse.max()) + 1 if inverse is not None and n else n
    name = (f"paired bootstrap of {k} groups ({resamples} resamples)" if inverse is not None
            else f"paired {_name(metric, test, resamples)}")
    va, vb = (float(_metric(metric, y, s, np.ones((1, n)))[0]) for s in (a, b))
    if n < min_samples:
        return _wait(metric, va, vb, alpha, name, n, n, n, min_samples)
    if metric == "auc" and test == "delong" and inverse is None:
        est, se = _delong_paired(y, a, b)
        return _normal(metric, va, vb, est, se, alpha, "paired DeLong", n, n, n, min_samples)
    rng = np.random.default_rng(seed)
    diffs = []
    for size in _chunks(resamples, n):
        w = _counts(rng, size, n) if inverse is None else _counts(rng, size, k)[:, inverse]
        diffs.append(_metric(metric, y, b, w) - _metric(metric, y, a, w))
    return _percentile(metric, va, vb, np.concatenate(diffs), alpha, name, n, n, n, min_samples)


def compare_unpaired(metric: str, y_champion: np.ndarray, champion: np.ndarray, y_challenger: np.ndarray,
                     challenger: np.ndarray, *, alpha: float = 0.05, min_samples: int = 200, resamples: int = 1000,
                     test: str = "bootstrap", seed: int = 0) -> Comparison:
    """Unpaired: each model's scores of its own labelled rows; each sample is resampled independently."""
    ya, a, yb, b = (np.asarray(v, dtype=float) for v in (y_champion, champion, y_challenger, challenger))
    if len(ya) != len(a) or len(yb) != len(b):
        raise ValueError("each model needs one label per score")
    _check(metric, test)
    na, nb = len(ya), len(yb)
    va = float(_metric(metric, ya, a, np.ones((1, na)))[0]) if na else math.nan
    vb = float(_metric(metric, yb, b, np.ones((1, nb)))[0]) if nb else math.nan
    n = min(na, nb)
    if n < min_samples:
        return _wait(metric, va, vb, alpha, f"unpaired {_name(metric, test, resamples)}", n, na, nb, min_samples)
    if metric == "auc" and test == "delong":
        se = math.sqrt(_delong_var(ya, a) + _delong_var(yb, b))
        return _normal(metric, va, vb, vb - va, se, alpha, "unpaired DeLong", n, na, nb, min_samples)
    rng = np.random.default_rng(seed)
    diffs = []
    for size in _chunks(resamples, max(na, nb)):
        diffs.append(_metric(metric, yb, b, _counts(rng, size, nb)) - _metric(metric, ya, a, _counts(rng, size, na)))
    return _percentile(metric, va, vb, np.concatenate(diffs), alpha, f"unpaired bootstrap ({resamples} resamples)",
                       n, na, nb, min_samples)


def interval(metric: str, y: np.ndarray, scores: np.ndarray, *, alpha: float = 0.05, resamples: int = 1000,
             seed: int = 0) -> tuple[float, float, float]:
    """One model's ``metric`` on labelled rows with its (1 - alpha) bootstrap percentile interval:
    (value, low, high). The loop asks whether a champion's live quality is really below its test quality."""
    y, s = np.asarray(y, dtype=float), np.asarray(scores, dtype=float)
    _check(metric, "bootstrap")
    n = len(y)
    value = float(_metric(metric, y, s, np.ones((1, n)))[0]) if n else math.nan
    if n < 2:
        return value, math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.concatenate([_metric(metric, y, s, _counts(rng, size, n)) for size in _chunks(resamples, n)])
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return value, math.nan, math.nan
    low, high = (float(q) for q in np.quantile(values, [alpha / 2, 1 - alpha / 2]))
    return value, low, high


def day_groups(times: Any) -> np.ndarray:
    """The UTC day of each timestamp (an integer per row): the groups of a day-clustered bootstrap."""
    import pandas as pd

    t = pd.to_datetime(pd.Series(times), utc=True)
    return ((t - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)).fillna(-1).astype("int64").to_numpy()


# ------------------------------------------------------------------------------------ verdicts
def _verdict(metric: str, low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high) or low <= 0 <= high:
        return "same"
    up = low > 0
    return "better" if up == HIGHER_IS_BETTER[metric] else "worse"


def _wait(metric, va, vb, alpha, test, n, na, nb, min_samples) -> Comparison:
    return Comparison(metric, va, vb, vb - va, math.nan, math.nan, math.nan, alpha, test, n, na, nb, "wait",
                      min_samples)


def _percentile(metric, va, vb, diffs, alpha, test, n, na, nb, min_samples) -> Comparison:
    diffs = diffs[~np.isnan(diffs)]  # a resample with one class has no AUC
    if len(diffs) == 0:
        return _wait(metric, va, vb, alpha, test, n, na, nb, min_samples)
    low, high = (float(q) for q in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    k = len(diffs)
    p = min(1.0, 2 * min((np.sum(diffs <= 0) + 1) / (k + 1), (np.sum(diffs >= 0) + 1) / (k + 1)))
    return Comparison(metric, va, vb, vb - va, low, high, float(p), alpha, test, n, na, nb,
                      _verdict(metric, low, high), min_samples)


def _normal(metric, va, vb, est, se, alpha, test, n, na, nb, min_samples) -> Comparison:
    if se <= 0 or math.isnan(se):
        low = high = est
        p = 1.0 if est == 0 else 0.0
    else:
        z = NormalDist().inv_cdf(1 - alpha / 2)
        low, high = est - z * se, est + z * se
        p = 2 * (1 - NormalDist().cdf(abs(est) / se))
    return Comparison(metric, va, vb, float(est), float(low), float(high), float(p), alpha, test, n, na, nb,
                      _verdict(metric, low, high), min_samples)


def _check(metric: str, test: str) -> None:
    if metric not in HIGHER_IS_BETTER:
        raise ValueError(f"no interval for metric {metric!r}; comparable: {', '.join(METRICS)}")
    if test not in ("bootstrap", "delong"):
        raise ValueError(f"unknown test {test!r}: bootstrap or delong")


def _name(metric: str, test: str, resamples: int) -> str:
    return "DeLong" if metric == "auc" and test == "delong" else f"bootstrap ({resamples} resamples)"


# ---------------------------------------------------------------------------- the bootstrap
def _chunks(resamples: int, n: int) -> list[int]:
    per = max(1, _CELLS // max(n, 1))
    return [min(per, resamples - i) for i in range(0, resamples, per)]


def _counts(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``size`` bootstrap resamples of ``n`` rows as counts: row i drawn w[r, i] times in resample r.
    Float32 keeps counts and their running sums exact integers; one bincount per resample stays in
    cache (a single bincount over all of them was 2-3x slower)."""
    idx = rng.integers(0, n, (size, n), dtype=np.int32)
    w = np.empty((size, n), np.float32)
    for r in range(size):
        w[r] = np.bincount(idx[r], minlength=n)
    return w


def _metric(metric: str, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``metric`` of scores ``s`` on labels ``y`` under each row of weights ``w`` (resamples x rows)."""
    if metric == "auc":
        return _auc(y, s, w)
    w = w.astype(float, copy=False)
    total = w.sum(axis=1)
    if metric in ("rmse", "mse", "mae"):
        loss = np.abs(s - y) if metric == "mae" else (s - y) ** 2
        mean = w @ loss / total
        return np.sqrt(mean) if metric == "rmse" else mean
    if metric == "r2":
        sse = w @ ((s - y) ** 2)
        sst = w @ (y ** 2) - (w @ y) ** 2 / total
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sst > 0, 1 - sse / sst, np.nan)
    if metric == "log_loss":
        p = np.clip(s, 1e-7, 1 - 1e-7)
        return w @ -(y * np.log(p) + (1 - y) * np.log(1 - p)) / total
    hit = (s >= 0.5).astype(float)
    if metric == "accuracy":
        return w @ (hit == y).astype(float) / total
    tp, fp, fn = w @ (hit * y), w @ (hit * (1 - y)), w @ ((1 - hit) * y)  # f1
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted ROC AUC (ties count half) for every row of ``w``, as Mann-Whitney U over the resample:
    the positives' midranks, from one sort and one running sum (per tied group when scores tie)."""
    order = np.argsort(s, kind="stable")
    ys, ss = y[order].astype(np.float32), s[order]
    wo = w.astype(np.float32, copy=False)
    if not (order[1:] > order[:-1]).all():  # compare() hands rows over already in the champion's order
        wo = wo[:, order]
    n_pos = (wo @ ys).astype(float)
    n_all = wo.sum(axis=1, dtype=float)
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    if len(starts) == len(ss):  # no ties: a row's midrank is the count up to it, less half its own copies
        ranks = np.cumsum(wo, axis=1, dtype=np.float32)
        ranks -= 0.5 * wo
        ranks += 0.5
        ranked = np.einsum("ij,ij,j->i", wo, ranks, ys, dtype=float)
    else:
        group = np.add.reduceat(wo, starts, axis=1)
        pos = np.add.reduceat(wo * ys, starts, axis=1)
        mid = np.cumsum(group, axis=1, dtype=np.float32) - 0.5 * group + 0.5
        ranked = np.einsum("ij,ij->i", pos, mid, dtype=float)
    u = ranked - n_pos * (n_pos + 1) / 2
    den = n_pos * (n_all - n_pos)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, u / den, np.nan)


# ----------------------------------------------------------------------------------- DeLong
def _components(y: np.ndarray, s: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's structural components (per positive, per negative), with midranks for ties."""
    from scipy.stats import rankdata

    pos, neg = s[y == 1], s[y != 1]
    m, k = len(pos), len(neg)
    if m == 0 or k == 0:
        return math.nan, np.full(m, math.nan), np.full(k, math.nan)
    tz = rankdata(np.r_[pos, neg])
    v_pos = (tz[:m] - rankdata(pos)) / k
    v_neg = 1 - (tz[m:] - rankdata(neg)) / m
    return float(v_pos.mean()), v_pos, v_neg


def _delong_var(y: np.ndarray, s: np.ndarray) -> float:
    _, vp, vn = _components(y, s)
    if len(vp) < 2 or len(vn) < 2:
        return math.nan
    return float(np.var(vp, ddof=1) / len(vp) + np.var(vn, ddof=1) / len(vn))


def _delong_paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    auc_a, pa, na = _components(y, a)
    auc_b, pb, nb = _components(y, b)
    if len(pa) < 2 or len(na) < 2:
        return auc_b - auc_a, math.nan
    sp, sn = np.cov(np.vstack([pa, pb])), np.cov(np.vstack([na, nb]))
    var = (sp[0, 0] + sp[1, 1] - 2 * sp[0, 1]) / len(pa) + (sn[0, 0] + sn[1, 1] - 2 * sn[0, 1]) / len(na)
    return auc_b - auc_a, math.sqrt(max(var, 0.0))
