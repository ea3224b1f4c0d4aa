"""`raymlops predict` on small input scores in this process (issue 15, item 9): no Ray start-up, the same
output as the Ray engine (tests/integration/test_model_families.py compares them), errors naming file and
column. The package is registered in a real MLflow store (SQLite)."""

from __future__ import annotations

import pandas as pd
import pytest

from raymlops.errors import DataValidationError
from raymlops.model.batch import PREDICTION, choose_engine, predict_files
from raymlops.model.packaging import manifest_sha256
from raymlops.registry.store import MANIFEST_TAG, Registry
from tests.helpers import SMOKE_FLIGHTS
from tests.unit.test_models_and_packaging import _package, fitted_and_frame  # noqa: F401


def test_auto_scores_small_local_input_here_and_the_rest_on_ray(tmp_path):
    small = tmp_path / "rows.csv"
    small.write_text("distance\n1\n")
    assert choose_engine("auto", str(small), address=None) == "local"
    assert choose_engine("auto", str(tmp_path / "*.csv"), address=None) == "local"  # a glob, summed
    assert choose_engine("auto", str(small), address="auto") == "ray"  # a cluster was asked for
    assert choose_engine("auto", "s3://bucket/rows.csv", address=None) == "ray"  # not a local file
    assert choose_engine("auto", str(small), address=None, local_max_mb=1e-6) == "ray"  # over the limit
    assert choose_engine("ray", str(small), address=None) == "ray"
    with pytest.raises(DataValidationError, match="expected auto, ray or local"):
        choose_engine("spark", str(small), address=None)


def test_the_local_engine_scores_without_ray_and_names_a_bad_cell(tmp_path, fitted_and_frame):  # noqa: F811
    import ray

    _, path = _package(tmp_path / "built", fitted_and_frame[0])
    registry = Registry.for_workdir(tmp_path / "work")
    run_id = registry.start_run("predict", "local")
    registry.log_artifacts(run_id, path, "model")
    registry.register("m", run_id, "model", tags={MANIFEST_TAG: manifest_sha256(path)})
    rows = pd.read_csv(SMOKE_FLIGHTS).head(1000)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    result = predict_files(registry, "m/1", str(tmp_path / "rows.csv"), tmp_path / "scored", fmt="csv",
                           engine="local", batch_size=300)
    assert result["rows"] == 1000 and result["engine"] == "local" and not ray.is_initialized()
    scored = pd.read_parquet(tmp_path / "scored")
    assert len(scored) == 1000 and scored[PREDICTION].between(0, 1).all()
    assert scored["distance"].tolist() == rows["distance"].tolist()  # input order kept, inputs kept

    bad = rows.head(20).astype({"distance": object})
    bad.loc[bad.index[4], "distance"] = "far"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"bad.csv: column 'distance' has values that are not float: \['far'\]"):
        predict_files(registry, "m/1", str(tmp_path / "bad.csv"), tmp_path / "bad-out", fmt="csv", engine="local")
    assert not (tmp_path / "bad-out").exists() and not list(tmp_path.glob(".bad-out*"))
