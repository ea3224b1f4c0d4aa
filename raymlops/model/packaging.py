"""The packaged model: everything serving needs, in files that never need unpickling.

    model/
      manifest.json            format, family, sha256 of every file, spec, model config, input schema, lineage
      <model file>             the family's own safe format: weights.safetensors (mlp: plain tensors, no
                               code), model.lgb.txt (LightGBM's text model), model.xgb.ubj (XGBoost's UBJSON)
      features.json            the fitted feature pipeline
      reference_profile.json   training distributions for drift detection

``write_package`` builds it in a temp folder and renames it into place; ``load_package`` verifies every
checksum before the family (``raymlops.model``) reads its file, so a truncated or tampered file is
refused with a clear error. The manifest itself is authenticated by the registry: registration tags the
version with ``manifest_sha256`` and downloads are checked against it, so rewriting the manifest to match
altered weights, or adding a file it does not list, is refused too.

Example::

    model = load_package("path/to/model")
    model.predict_frame(raw_rows)         # raw columns in, probabilities (or values) out
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from raymlops.config import BaseModelConfig, ValidationConfig
from raymlops.data.features import FittedFeatures
from raymlops.errors import ConfigError, ModelPackageError
from raymlops.model.contract import Features, ModelSpec, Predictor, get_family

PACKAGE_FORMAT = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"  # the mlp family's model file
FEATURES = "features.json"
PROFILE = "reference_profile.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_schema(fitted: FittedFeatures, validation: ValidationConfig) -> dict[str, dict[str, Any]]:
    """Per raw input column, what a request may carry: its type and nullability, and its min, max and
    allowed values only where the column sets ``request_bounds``. Ranges are otherwise expectations of the
    training data: a request dated after the training year, or a value beyond the observed range, is
    served and shows up as drift instead of a 422."""
    schema = {}
    for col in fitted.input_columns:
        exp = validation.columns.get(col)
        if exp is None:
            schema[col] = {}
            continue
        left_out = {"unique", "max_null_fraction", "request_bounds"}
        if not exp.request_bounds:
            left_out |= {"min", "max", "allowed"}
        schema[col] = exp.model_dump(exclude_none=True, exclude=left_out)
    return schema


def write_package(dest: str | Path, *, fitted: FittedFeatures, spec: ModelSpec, model_config: BaseModelConfig,
                  schema: dict[str, Any], profile: dict[str, Any], lineage: dict[str, str],
                  model_files: dict[str, Path] | None = None, weights: dict[str, Any] | None = None) -> Path:
    """Write the package atomically to ``dest`` (which must not exist yet).

    ``model_files`` maps the family's package file name to a file to copy (a checkpoint's best model);
    ``weights`` is a torch state_dict, saved as safetensors, for an MLP trained in this process.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    family = getattr(model_config, "family", "mlp")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if weights is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        for name, source in (model_files or {}).items():
            shutil.copyfile(source, tmp / name)
        model_names = sorted(p.name for p in tmp.iterdir())
        if not model_names:
            raise ModelPackageError(f"{dest}: no model file given (model_files or weights)")
        fitted.save(tmp / FEATURES)
        (tmp / PROFILE).write_text(json.dumps(profile))
        manifest = {
            "format": PACKAGE_FORMAT, "family": family,
            "files": {name: sha256(tmp / name) for name in (*model_names, FEATURES, PROFILE)},
            "spec": spec.to_dict(), "model_config": model_config.model_dump(), "input_schema": schema,
            "target": fitted.target, "lineage": lineage,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


@dataclass
class LoadedModel:
    """A verified package, ready to predict from raw rows, whatever its family."""

    path: Path
    manifest: dict[str, Any]
    features: FittedFeatures
    spec: ModelSpec
    predictor: Predictor

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def family(self) -> str:
        return self.manifest.get("family", "mlp")

    def predict_features(self, features: Features) -> np.ndarray:
        """Transformed features in, one score per row out (float64)."""
        return np.asarray(self.predictor.predict(features), dtype=np.float64)

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw input columns in, one score per row out (probability of the positive class, or value)."""
        return self.predict_features(self.features.transform_frame(frame))


def manifest_sha256(path: str | Path) -> str:
    """The digest of a package's manifest.json: the registry records it when the version is registered, so a
    manifest rewritten later (with checksums to match altered files) is told apart from the registered one."""
    return sha256(Path(path) / MANIFEST)


def verify_package(path: str | Path, expected_manifest_sha256: str | None = None) -> dict[str, Any]:
    """Check a package before anything reads it: its manifest is the registered one (when the registry's digest
    is given), the folder holds exactly the files the manifest lists, and every file matches its checksum."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ModelPackageError(f"{path} is not a model package (no {MANIFEST})")
    if expected_manifest_sha256 is not None and manifest_sha256(path) != expected_manifest_sha256:
        raise ModelPackageError(f"{path}: {MANIFEST} is not the manifest registered with this version (its sha256 "
                                "differs from the registry's record); refusing to load it")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{mpath} is not valid JSON: {exc}") from exc
    if manifest.get("format") != PACKAGE_FORMAT:
        raise ModelPackageError(f"{path}: package format {manifest.get('format')} is not supported "
                                f"(this raymlops reads {PACKAGE_FORMAT})")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ModelPackageError(f"{mpath} lists no files")
    present = sorted(str(f.relative_to(path)) for f in path.rglob("*") if not f.is_dir() and f != mpath)
    for name in present:
        if name not in listed:
            raise ModelPackageError(f"{path}: {name} is not listed in {MANIFEST} (a package holds exactly the "
                                    "files it was registered with); refusing to load it")
    for name, digest in listed.items():
        f = path / name
        if not f.is_file():
            raise ModelPackageError(f"{path}: {name} is missing")
        if sha256(f) != digest:
            raise ModelPackageError(f"{path}: {name} does not match the checksum recorded at registration "
                                    "(truncated or tampered); refusing to load it")
    return manifest


def check_builder(path: Path, manifest: dict[str, Any], trusted_builders: Collection[str] = ()) -> None:
    """A package is data: it may name a built-in builder, or code the loading side's config already trusts.

    ``model_config.builder`` is an import path that would be called; taking it from a package (which a
    registry or a remote store supplies) would let that store run code here, as unpickling would.
    """
    if manifest.get("family", "mlp") != "mlp":
        return  # the tree families name no code: their model file is data read by the library
    from raymlops.model.mlp_family import BUILTIN_BUILDERS

    builder = (manifest.get("model_config") or {}).get("builder", "mlp")
    if builder in BUILTIN_BUILDERS or builder in trusted_builders:
        return
    raise ModelPackageError(
        f"{path}: the package asks for model builder {builder!r}, code this process was not configured to run; "
        f"a model package cannot choose code. If you trust it, set `model.builder: {builder}` in the config "
        "that trains and serves this model")


def load_package(path: str | Path, trusted_builders: Collection[str] = (),
                 expected_manifest_sha256: str | None = None) -> LoadedModel:
    """Verify the manifest, checksums and the builder, then let the package's family read its model file."""
    path = Path(path)
    manifest = verify_package(path, expected_manifest_sha256)
    check_builder(path, manifest, trusted_builders)
    spec = ModelSpec(**manifest["spec"])
    try:
        family = get_family(manifest.get("family", "mlp"))
    except ConfigError as exc:
        raise ModelPackageError(f"{path}: {exc}") from exc
    predictor = family.load(path, manifest, spec)
    return LoadedModel(path=path, manifest=manifest, features=FittedFeatures.load(path / FEATURES),
                       spec=spec, predictor=predictor)
