"""Benchmark of drift monitoring: cost per check, and detection on streams with known change points.

What it measures (pure: no Ray, one process, one core)

1. Cost of one drift check over a window of 10,000 rows x 20 features (14 numeric, of which 7 normal and
   7 skewed gamma, and 6 categorical with 5 levels): ``detect_drift`` (PSI + KS against the 1,000-value
   reference sample for numeric features, PSI + chi-square against the reference shares for categorical
   ones, Wasserstein / Jensen-Shannon distances, Holm across features) versus the named baseline, "a plain
   scipy loop" a user would write: per feature, ``scipy.stats.ks_2samp`` of the window against the full
   50,000-row reference column, or ``scipy.stats.chi2_contingency`` on the two value-count tables, no
   correction. Median of 15 runs each; ratio ours / baseline (< 1: ours is cheaper).

2. Detection on synthetic streams of windows (2,000 rows each, 20 features) whose feature ``x2`` shifts by
   ``delta`` standard deviations at window 20 (of 30): over 20 seeds, the false-alarm rate per window
   before the change (any feature flagged) and the detection delay in windows after it (first window
   flagging x2), for ours (Holm, alpha 0.01, min_psi 0.1) and for the baseline (plain scipy at 0.01 per
   feature, no correction, no PSI floor).

Run: ``python benchmarks/monitor_bench.py``; writes ``benchmarks/out/monitor_bench.json``. Serving
throughput with monitoring on vs off is measured by ``benchmarks/serve_bench.py --quick --knobs monitoring_off``
(the same run, same Ray: the shipped deployment vs one with ``monitoring.enabled: false``).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from raymlops.monitoring.drift import detect_drift
from raymlops.monitoring.profiles import build_reference_profile
from raymlops.workspace import write_json_atomic

NUMERIC = [f"x{i}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
LEVELS = np.array(["a", "b", "c", "d", "e"])
PROBS = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
SEEDS, WINDOWS, CHANGE = 20, 30, 20


def frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    data = {c: rng.normal(shift if c == "x2" else 0.0, 1.0, n) for c in NUMERIC[:7]}
    data |= {c: rng.gamma(2.0, 3.0, n) for c in NUMERIC[7:]}
    data |= {c: rng.choice(LEVELS, n, p=PROBS) for c in CATEGORICAL}
    return pd.DataFrame(data)


def plain_scipy(reference: pd.DataFrame, window: pd.DataFrame, alpha: float = 0.01) -> list[str]:
    drifted = []
    for c in NUMERIC:
        if stats.ks_2samp(reference[c].to_numpy(), window[c].to_numpy()).pvalue < alpha:
            drifted.append(c)
    for c in CATEGORICAL:
        table = pd.concat([reference[c].value_counts(), window[c].value_counts()], axis=1).fillna(0).to_numpy()
        if stats.chi2_contingency(table.T).pvalue < alpha:
            drifted.append(c)
    return drifted


def timed(fn, repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    rng = np.random.default_rng(0)
    reference = frame(rng, 50_000)
    profile = build_reference_profile(reference, NUMERIC, CATEGORICAL)
    window = frame(np.random.default_rng(1), 10_000)

    ours_s = timed(lambda: detect_drift(profile, window, alpha=0.01))
    base_s = timed(lambda: plain_scipy(reference, window))
    print("1. one drift check, 10,000 rows x 20 features (median of 15)")
    print(f"   raymlops detect_drift   {ours_s * 1000:8.1f} ms  ({ours_s / 20 * 1000:.2f} ms per feature)")
    print(f"   plain scipy loop        {base_s * 1000:8.1f} ms")
    print(f"   ratio ours / baseline   {ours_s / base_s:8.2f}")

    results = {"check": {"rows": 10_000, "features": 20, "ours_ms": ours_s * 1000, "plain_scipy_ms": base_s * 1000,
                         "ratio": ours_s / base_s}, "streams": {}}
    print("\n2. streams of 30 windows x 2,000 rows, x2 shifts at window 20 (20 seeds)")
    print(f"   {'delta':>6} {'method':>12} {'false alarms/window':>20} {'detected':>9} {'delay (windows)':>16}")
    for delta in (0.1, 0.2, 0.5):
        row = {}
        for method in ("raymlops", "plain_scipy"):
            false, windows_before, delays = 0, 0, []
            for seed in range(SEEDS):
                srng = np.random.default_rng(1000 + seed)
                found = None
                for w in range(WINDOWS):
                    win = frame(srng, 2000, shift=delta if w >= CHANGE else 0.0)
                    if method == "raymlops":
                        flagged = detect_drift(profile, win, alpha=0.01, min_psi=0.1).drifted
                    else:
                        flagged = plain_scipy(reference, win)
                    if w < CHANGE:
                        windows_before += 1
                        false += bool(flagged)
                    elif found is None and "x2" in flagged:
                        found = w - CHANGE
                        break
                if found is not None:
                    delays.append(found)
            rate = false / windows_before
            delay = statistics.mean(delays) if delays else float("nan")
            row[method] = {"false_alarm_rate": rate, "detected": len(delays) / SEEDS, "mean_delay_windows": delay}
            print(f"   {delta:>6} {method:>12} {rate:>20.3f} {len(delays) / SEEDS:>9.0%} {delay:>16.2f}")
        results["streams"][str(delta)] = row
    out = write_json_atomic(Path(__file__).parent / "out" / "monitor_bench.json", results)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
