"""Batch scoring with Ray Data: a pool of actors each loads the verified package once and scores batches.

Evaluation uses ``predict_dataset`` on the test split; ``predict_files`` (``raymlops predict``) scores
files with a registered version, casting input columns exactly as serving does, and publishes Parquet
atomically: it is written to a temp folder beside the output and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.data

from raymlops.errors import DataValidationError
from raymlops.packaging import LoadedModel, load_package

PREDICTION = "prediction"
PROBABILITY = "probability_"  # a multiclass model's columns: probability_<class name>, one per class


def probability_columns(classes: list[str]) -> list[str]:
    return [f"{PROBABILITY}{c}" for c in classes]


def with_predictions(batch: pd.DataFrame, scores: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``batch`` plus its scores: a ``prediction`` column (the score; for multiclass the most probable
    class's name) and, for multiclass, one ``probability_<class>`` column per class."""
    batch = batch.copy()
    if not classes:
        batch[PREDICTION] = scores
        return batch
    batch[PREDICTION] = np.asarray(classes, dtype=object)[np.asarray(scores).argmax(axis=1)]
    for i, column in enumerate(probability_columns(classes)):
        batch[column] = scores[:, i]
    return batch


class _Scorer:
    package_dir = ""  # set on a per-package subclass: no constructor arguments to keep in the object store
    cast = False
    trusted_builders: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.model = load_package(self.package_dir, self.trusted_builders)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scores = score_frame(self.model, batch) if self.cast else self.model.predict_frame(batch)
        return with_predictions(batch, scores, self.model.spec.classes)


def score_frame(model: LoadedModel, frame: pd.DataFrame) -> Any:
    """Scores of raw rows whose columns are cast to the model's input schema first, as serving casts a
    request: what ``raymlops predict`` and ``raymlops.load_model(...).predict`` compute."""
    from raymlops.serving.schema import coerce_to_schema

    schema = model.manifest["input_schema"]
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        raise DataValidationError(f"input lacks the model's input columns {missing}")
    typed, failures = coerce_to_schema(frame, schema)
    if failures:
        col, bad = next(iter(failures.items()))
        raise DataValidationError(
            f"column {col!r} has values that are not {schema[col].get('type')}: "
            f"{list(bad.astype(str).head(3))} ({sum(len(v) for v in failures.values())} bad cells in this batch)")
    return model.predict_frame(typed)


SCORER_CPUS = 0.5


def predict_dataset(ds: ray.data.Dataset, package_dir: str | Path, *, batch_size: int = 4096,
                    concurrency: int = 1, cast: bool = False,
                    trusted_builders: tuple[str, ...] = ()) -> ray.data.Dataset:
    """Add a ``prediction`` column to every row of ``ds`` (raw input columns in), and for a multiclass
    model a ``probability_<class>`` column per class (``with_predictions``).

    Scorers reserve half a CPU: with a whole one, a scorer and the read tasks feeding it could not both
    be scheduled beside serving replicas on a small machine, and the job waited forever.
    """
    scorer = type("Scorer", (_Scorer,), {"package_dir": str(package_dir), "cast": cast,
                                         "trusted_builders": tuple(trusted_builders)})
    return ds.map_batches(scorer, batch_format="pandas", batch_size=batch_size, num_cpus=SCORER_CPUS,
                          compute=ray.data.ActorPoolStrategy(size=concurrency))


def read_input(path: str, fmt: str) -> ray.data.Dataset:
    reader = {"csv": ray.data.read_csv, "parquet": ray.data.read_parquet, "json": ray.data.read_json}[fmt]
    try:
        return reader(path)
    except Exception as exc:  # pyarrow/Ray raise many types for a missing or unreadable file
        raise DataValidationError(f"cannot read {path} as {fmt}: {exc}") from exc


def predict_files(registry: Any, model_ref: str, input_path: str, output: str | Path, *, fmt: str,
                  batch_size: int = 4096, concurrency: int = 1, overwrite: bool = False,
                  trusted_builders: tuple[str, ...] = ()) -> dict[str, Any]:
    """Score ``input_path`` with a registered version; write ``output`` (a Parquet folder) atomically."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataValidationError(f"{output} exists; pass --overwrite to replace it")
    name, version = registry.resolve(model_ref)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raymlops-predict-") as tmp:
        package = registry.download_package(name, version, tmp)  # verified against the registered manifest
        ds = predict_dataset(read_input(input_path, fmt), package, batch_size=batch_size,
                             concurrency=concurrency, cast=True, trusted_builders=trusted_builders)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            try:
                ds.write_parquet(str(staging))
            except Exception as exc:
                message = _validation_message(exc)
                if message is not None:
                    raise DataValidationError(f"{input_path}: {message}") from exc
                raise
            rows = sum(pd.read_parquet(f, columns=[PREDICTION]).shape[0] for f in staging.glob("*.parquet"))
            if output.exists():
                shutil.rmtree(output)
            os.rename(staging, output)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return {"model": name, "version": version, "rows": rows, "output": str(output)}


def _validation_message(exc: BaseException) -> str | None:
    """The message of a DataValidationError raised inside a Ray Data worker, however Ray wrapped it.

    Ray re-raises a UDF's failure as ``RayTaskError(UserCodeException)`` whose original cause survives
    only as text in the remote traceback, so the chain is searched by type first, then by text.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DataValidationError):
            return current.message
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__
    marker = "DataValidationError: "
    text = str(exc)
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip().split("\n\n")[0].replace("\n", " ")
