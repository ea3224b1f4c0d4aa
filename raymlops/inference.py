"""Batch scoring with Ray Data: a pool of actors each loads the verified package once and scores batches.

Evaluation uses it on the test split, and so does ``raymlops predict`` on files.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import ray.data

from raymlops.packaging import load_package

PREDICTION = "prediction"


class _Scorer:
    package_dir = ""  # set on a per-package subclass: no constructor arguments to keep in the object store

    def __init__(self) -> None:
        self.model = load_package(self.package_dir)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        batch = batch.copy()
        batch[PREDICTION] = self.model.predict_frame(batch)
        return batch


def predict_dataset(ds: ray.data.Dataset, package_dir: str | Path, *, batch_size: int = 4096,
                    concurrency: int = 1) -> ray.data.Dataset:
    """Add a ``prediction`` column to every row of ``ds`` (raw input columns in)."""
    scorer = type("Scorer", (_Scorer,), {"package_dir": str(package_dir)})
    return ds.map_batches(scorer, batch_format="pandas", batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=concurrency))
