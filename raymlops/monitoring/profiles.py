"""Reference profiles: the training data's per-feature distributions, stored with the model (pure).

Numeric features keep decile bin edges with the share of rows per bin (plus mean, std, missing share
and the range seen in training, so drift can tell "moved within what the model has seen" from "moved
somewhere new"); categorical features keep the share of each category (capped) and of missing values. Drift
detection later compares a window of requests against exactly these numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

PROFILE_VERSION = 1
MAX_CATEGORIES = 200


def numeric_profile(values: pd.Series, bins: int = 10) -> dict[str, Any]:
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    present = x.dropna().to_numpy()
    missing = float(x.isna().mean()) if len(x) else 0.0
    if len(present) == 0:
        return {"kind": "numeric", "edges": [], "shares": [], "mean": None, "std": None,
                "missing": missing, "rows": len(x)}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return {"kind": "numeric", "edges": edges.tolist(), "shares": (counts / counts.sum()).tolist(),
            "mean": float(present.mean()), "std": float(present.std()), "missing": missing,
            "min": float(present.min()), "max": float(present.max()), "rows": len(x), "sample": np.sort(np.random.default_rng(0).choice(
                present, size=min(len(present), 1000), replace=False)).tolist()}


def categorical_profile(values: pd.Series) -> dict[str, Any]:
    text = values.astype("string")
    shares = text.value_counts(normalize=True, dropna=True)
    if len(text):
        shares = shares * (1 - float(text.isna().mean()))
    top = shares.head(MAX_CATEGORIES)
    return {"kind": "categorical", "shares": {str(k): float(v) for k, v in top.items()},
            "other": float(max(0.0, 1 - top.sum() - (text.isna().mean() if len(text) else 0))),
            "missing": float(text.isna().mean()) if len(text) else 0.0, "rows": len(text)}


def build_reference_profile(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict[str, Any]:
    """Profile of the raw input columns the model reads (derived columns are profiled as computed)."""
    return {
        "version": PROFILE_VERSION,
        "rows": len(frame),
        "features": {
            **{c: numeric_profile(frame[c]) for c in numeric if c in frame.columns},
            **{c: categorical_profile(frame[c]) for c in categorical if c in frame.columns},
        },
    }
