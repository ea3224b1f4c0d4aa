"""Batch scoring with Ray Data: a pool of actors each loads the verified package once and scores batches.

Evaluation uses ``predict_dataset`` on the test split; ``predict_files`` (``raymlops predict``) scores
files with a registered version, casting input columns exactly as serving does, and publishes Parquet
atomically: it is written to a temp folder beside the output and renamed into place only when complete.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray.data

from raymlops.errors import DataValidationError
from raymlops.model.packaging import LoadedModel, load_package

# The columns batch scoring adds, named as /v1/predict names its fields (``serving.schema.Prediction``).
PREDICTION = "score"  # P(positive) for a binary model, the predicted value (regression); multiclass: see below
PROBABILITY = "probability_"  # a multiclass model's columns: probability_<class name>, one per class
PREDICTED_CLASS = "class_name"  # the predicted class's name (multiclass, or a binary model with named classes)


def probability_columns(classes: list[str]) -> list[str]:
    return [f"{PROBABILITY}{c}" for c in classes]


def with_predictions(batch: pd.DataFrame, scores: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``batch`` plus its predictions, in the columns /v1/predict names its fields: ``score`` (the
    positive class's probability, or the value; for multiclass the predicted class's probability),
    ``class_name`` for a model with named classes, and for multiclass one ``probability_<class>`` column
    per class. An input column of one of those names is refused, not overwritten."""
    multiclass = np.ndim(scores) == 2
    added = [PREDICTION, *([PREDICTED_CLASS] if classes else []), *(probability_columns(classes) if multiclass else [])]
    clash = [c for c in added if c in batch.columns]
    if clash:
        raise DataValidationError(f"the input already has a column {clash[0]!r}, which scoring adds; rename it "
                                  f"(scores go to {', '.join(repr(c) for c in added)})")
    batch = batch.copy()
    if not multiclass:
        batch[PREDICTION] = scores
        if classes:
            batch[PREDICTED_CLASS] = np.asarray(classes, dtype=object)[(np.asarray(scores) >= 0.5).astype(int)]
        return batch
    proba = np.asarray(scores)
    best = proba.argmax(axis=1)
    batch[PREDICTION] = proba[np.arange(len(best)), best]
    batch[PREDICTED_CLASS] = np.asarray(classes, dtype=object)[best]
    for i, column in enumerate(probability_columns(classes)):
        batch[column] = proba[:, i]
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
    from raymlops.model.inputs import coerce_to_schema

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
    """Add the ``score`` column to every row of ``ds`` (raw input columns in), ``class_name`` for named
    classes, and for a multiclass model a ``probability_<class>`` column per class (``with_predictions``).

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


LOCAL_MAX_MB = 64.0  # `raymlops predict --engine auto` scores inputs up to this size in-process, without Ray


def local_input_bytes(input_path: str) -> int | None:
    """Total size of a local file, folder or glob; None for a URI or nothing found (Ray reads those)."""
    if "://" in input_path:
        return None
    path = Path(input_path)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [f for f in path.rglob("*") if f.is_file()]
    else:
        files = [Path(f) for f in glob.glob(input_path) if Path(f).is_file()]
    return sum(f.stat().st_size for f in files) if files else None


def choose_engine(engine: str, input_path: str, *, address: str | None, local_max_mb: float = LOCAL_MAX_MB) -> str:
    """``local`` (pandas in this process, no Ray start-up) or ``ray`` (Ray Data, an actor pool).

    ``auto`` scores locally when no cluster was named and the input is local files of at most
    ``local_max_mb``: at that size Ray's start-up is most of the time a command takes."""
    if engine in ("local", "ray"):
        return engine
    if engine != "auto":
        raise DataValidationError(f"--engine {engine!r}: expected auto, ray or local")
    size = local_input_bytes(input_path)
    return "local" if address is None and size is not None and size <= local_max_mb * 1e6 else "ray"


def _read_locally(input_path: str, fmt: str) -> pd.DataFrame:
    import pyarrow.dataset as pads

    try:
        source = input_path if Path(input_path).exists() else sorted(glob.glob(input_path)) or input_path
        file_format = {"csv": "csv", "parquet": "parquet", "json": "json"}[fmt]
        return pads.dataset(source, format=file_format).to_table().to_pandas()
    except Exception as exc:  # pyarrow raises many types for a missing, unreadable or malformed file
        raise DataValidationError(f"cannot read {input_path} as {fmt}: {str(exc).splitlines()[0]}") from exc


def _score_locally(input_path: str, fmt: str, package: Path, staging: Path, *, batch_size: int,
                   trusted_builders: tuple[str, ...]) -> None:
    """The Ray engine's output, computed in this process: the same casts and columns, one Parquet file."""
    model = load_package(package, trusted_builders)
    frame = _read_locally(input_path, fmt)
    parts = []
    for start in range(0, len(frame), batch_size):
        batch = frame.iloc[start:start + batch_size].reset_index(drop=True)
        try:
            scores = score_frame(model, batch)
        except DataValidationError as exc:
            raise DataValidationError(f"{input_path}: {exc.message}") from None
        parts.append(with_predictions(batch, scores, model.spec.classes))
    scored = pd.concat(parts, ignore_index=True) if parts else with_predictions(
        frame, np.zeros((0, model.spec.outputs)) if model.spec.outputs > 1 else np.zeros(0), model.spec.classes)
    scored.to_parquet(staging / "part-00000.parquet", index=False)


def predict_files(registry: Any, model_ref: str, input_path: str, output: str | Path, *, fmt: str,
                  batch_size: int = 4096, concurrency: int = 1, overwrite: bool = False,
                  trusted_builders: tuple[str, ...] = (), engine: str = "ray") -> dict[str, Any]:
    """Score ``input_path`` with a registered version; write ``output`` (a Parquet folder) atomically.
    ``engine``: ``ray`` (Ray Data, needs a Ray connection) or ``local`` (see ``choose_engine``)."""
    output = Path(output)
    if output.exists() and not overwrite:
        raise DataValidationError(f"{output} exists; pass --overwrite to replace it")
    name, version = registry.resolve(model_ref)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raymlops-predict-") as tmp:
        package = registry.download_package(name, version, tmp)  # verified against the registered manifest
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            if engine == "local":
                _score_locally(input_path, fmt, package, staging, batch_size=batch_size,
                               trusted_builders=trusted_builders)
            else:
                ds = predict_dataset(read_input(input_path, fmt), package, batch_size=batch_size,
                                     concurrency=concurrency, cast=True, trusted_builders=trusted_builders)
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
    return {"model": name, "version": version, "rows": rows, "output": str(output), "engine": engine}


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
