"""Drift monitoring: the cost of one check, and detection on streams with known change points.

Pure (no Ray, one process). The named baseline is "a plain scipy loop" a user would write: per feature,
``scipy.stats.ks_2samp`` of the window against the full 50,000-row reference column, or
``scipy.stats.chi2_contingency`` on the two value-count tables, at 0.01 per feature, no correction.

1. One check over 10,000 rows x 20 features (7 normal and 7 skewed gamma numeric columns, 6 categorical
   with 5 levels): ``detect_drift`` (PSI + KS against the profile's 1,000-value reference sample,
   PSI + chi-square for categorical columns, Holm across features) against the baseline; median of 15.
2. Streams of 30 windows x 2,000 rows whose ``x2`` shifts by ``delta`` standard deviations at window 20,
   over 20 seeds: false alarms per window before the change (any feature flagged) and the delay in
   windows until ``x2`` is flagged, ours (Holm, alpha 0.01, min_psi 0.1) against the baseline.

Run: ``python benchmarks/monitor_bench.py [--quick]`` (quick: 5 timings, 4 seeds); writes
``benchmarks/out/monitor_bench.json``. Serving with monitoring on vs off:
``benchmarks/serve_knobs_bench.py --knobs monitoring_off``.
"""

from __future__ import annotations

import argparse
import statistics

import harness
import numpy as np
import pandas as pd
from harness import Comparison
from scipy import stats

NUMERIC = [f"x{i}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
LEVELS = np.array(["a", "b", "c", "d", "e"])
PROBS = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
WINDOWS, CHANGE = 30, 20
BASELINE = "plain scipy loop"


def frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    data = {c: rng.normal(shift if c == "x2" else 0.0, 1.0, n) for c in NUMERIC[:7]}
    data |= {c: rng.gamma(2.0, 3.0, n) for c in NUMERIC[7:]}
    data |= {c: rng.choice(LEVELS, n, p=PROBS) for c in CATEGORICAL}
    return pd.DataFrame(data)


def plain_scipy(reference: pd.DataFrame, window: pd.DataFrame, alpha: float = 0.01) -> list[str]:
    drifted = [c for c in NUMERIC if stats.ks_2samp(reference[c].to_numpy(), window[c].to_numpy()).pvalue < alpha]
    for c in CATEGORICAL:
        table = pd.concat([reference[c].value_counts(), window[c].value_counts()], axis=1).fillna(0).to_numpy()
        if stats.chi2_contingency(table.T).pvalue < alpha:
            drifted.append(c)
    return drifted


def stream(check, delta: float, seeds: int) -> dict[str, float]:
    """False alarms per window before the change, share of seeds detected, mean delay in windows."""
    false = before = 0
    delays = []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        for w in range(WINDOWS):
            flagged = check(frame(rng, 2000, shift=delta if w >= CHANGE else 0.0))
            if w < CHANGE:
                before += 1
                false += bool(flagged)
            elif "x2" in flagged:
                delays.append(w - CHANGE)
                break
    return {"false_alarm_rate": false / before, "detected": len(delays) / seeds,
            "mean_delay_windows": statistics.mean(delays) if delays else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 timed checks and 4 seeds per stream")
    parser.add_argument("--max-wait", type=float, default=60.0, help="wait up to this long for a quiet machine")
    args = parser.parse_args()
    from raymlops.monitoring.drift import detect_drift
    from raymlops.monitoring.profiles import build_reference_profile

    repeats, seeds = (5, 4) if args.quick else (15, 20)
    reference = frame(np.random.default_rng(0), 50_000)
    profile = build_reference_profile(reference, NUMERIC, CATEGORICAL)
    window = frame(np.random.default_rng(1), 10_000)

    quiet = harness.wait_for_quiet(args.max_wait)
    with harness.CpuWatch() as watch:
        ours = harness.summarize(harness.repeat(lambda: detect_drift(profile, window, alpha=0.01), repeats))
        base = harness.summarize(harness.repeat(lambda: plain_scipy(reference, window), repeats))
    machine = {**watch.result(), **quiet}
    comparisons = [Comparison("monitor_bench", "one drift check, 10,000 rows x 20 features (median)",
                              ours["median"] * 1000, base["median"] * 1000, BASELINE, "ms",
                              extra={"disturbed": machine["disturbed"]})]

    streams = {}
    for delta in (0.1, 0.2, 0.5):
        mine = stream(lambda w: detect_drift(profile, w, alpha=0.01, min_psi=0.1).drifted, delta, seeds)
        plain = stream(lambda w: plain_scipy(reference, w), delta, seeds)
        streams[str(delta)] = {"raymlops": mine, "plain_scipy": plain}
        case = f"stream, x2 shifts {delta} sd"
        comparisons += [
            Comparison("monitor_bench", f"{case}: false alarms per window", mine["false_alarm_rate"],
                       plain["false_alarm_rate"], BASELINE, "per window"),
            Comparison("monitor_bench", f"{case}: share of seeds detected", mine["detected"], plain["detected"],
                       BASELINE, "", higher_is_better=True,
                       extra={"mean_delay_windows_ours": mine["mean_delay_windows"],
                              "mean_delay_windows_baseline": plain["mean_delay_windows"]})]
    harness.print_comparisons(comparisons)
    harness.write_results(__file__, comparisons, {"check": {"rows": 10_000, "features": 20, "ours_s": ours,
                                                            "baseline_s": base, "machine": machine},
                                                  "streams": streams, "seeds": seeds}, args)


if __name__ == "__main__":
    main()
