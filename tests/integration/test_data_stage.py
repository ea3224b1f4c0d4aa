"""The data stage on the session's real local Ray: snapshots, fingerprints, failures, features."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import ray.data

from raymlops.config import load_config
from raymlops.data.splits import assign_splits
from raymlops.data.stage import run_data_stage
from raymlops.data.versioning import list_snapshots
from raymlops.errors import DataValidationError
from tests.helpers import SMOKE_FLIGHTS, smoke_dict, write_config

pytestmark = pytest.mark.integration


def _config_with_flights(tmp_path, flights: pd.DataFrame, name="flights.csv"):
    path = tmp_path / name
    flights.to_csv(path, index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(path)
    return load_config(write_config(tmp_path, data))


def test_same_data_same_fingerprint_and_changed_cell_new_one(ray_session, tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False)
    cfg = _config_with_flights(tmp_path, flights)
    first = run_data_stage(cfg)
    assert not first.reused_snapshot
    assert first.snapshot.manifest.rows == 3000
    second = run_data_stage(cfg)
    assert second.snapshot.snapshot_id == first.snapshot.snapshot_id and second.reused_snapshot

    flights.loc[1717, "distance"] = str(float(flights.loc[1717, "distance"]) + 1)
    changed = _config_with_flights(tmp_path, flights, name="changed.csv")
    third = run_data_stage(changed)
    assert third.snapshot.snapshot_id != first.snapshot.snapshot_id
    assert sorted(s.snapshot_id for s in list_snapshots(cfg.workdir_path / "snapshots")) == sorted(
        {first.snapshot.snapshot_id, third.snapshot.snapshot_id})
    manifest = json.loads((first.snapshot.path / "_manifest.json").read_text())
    # Sources are listed sorted by path, so where the checkout lies decides their order.
    assert manifest["sources"] == sorted(manifest["sources"])
    assert any(s.endswith("/flights.csv") for s in manifest["sources"])
    assert manifest["schema"]["distance"] == "double"


def test_invalid_csv_reports_rows_and_writes_no_snapshot(ray_session, tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False)
    flights.loc[1233, "distance"] = "far"
    flights.loc[99, "temp" if "temp" in flights else "distance"] = "99999"
    flights.loc[500, "carrier"] = "ZZ"
    cfg = _config_with_flights(tmp_path, flights)
    with pytest.raises(DataValidationError) as info:
        run_data_stage(cfg)
    msg = str(info.value)
    assert "distance: type" in msg and "flights.csv row 1,234: 'far'" in msg
    assert "distance: range" in msg and "row 100" in msg
    assert "carrier: allowed" in msg and "'ZZ'" in msg
    report = json.loads(open(info.value.report_path).read())
    assert not report["passed"]
    assert list_snapshots(cfg.workdir_path / "snapshots") == []
    assert not any(p.name.startswith(".tmp-") for p in (cfg.workdir_path / "snapshots").iterdir())


def test_duplicate_rows_are_dropped_once(ray_session, tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False)
    doubled = pd.concat([flights, flights.iloc[:25], flights.iloc[:5]], ignore_index=True)
    result = run_data_stage(_config_with_flights(tmp_path, doubled))
    assert result.snapshot.manifest.rows == 3000
    plain = run_data_stage(_config_with_flights(tmp_path, flights, name="plain.csv"))
    assert plain.snapshot.snapshot_id == result.snapshot.snapshot_id


def test_features_fitted_on_train_and_ray_transform_matches_local(ray_session, tmp_path):
    cfg = _config_with_flights(tmp_path, pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False))
    result = run_data_stage(cfg)
    assert result.split_rows["train"] > result.split_rows["test"] > 0
    assert sum(result.split_rows.values()) == 3000
    snap = ray.data.read_parquet(str(result.snapshot.path)).to_pandas()
    splits = assign_splits(snap, cfg.data.split)
    train = snap[splits == "train"]
    local = result.features.transform_frame(snap[splits == "test"], keep=["delayed"])
    remote = result.datasets["test"].to_pandas()
    cols = list(local.columns)
    a = local.sort_values(cols).reset_index(drop=True)
    b = remote[cols].astype(local.dtypes.to_dict()).sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    distance = next(s for s in result.features.numeric if s.column == "distance")
    assert distance.mean == pytest.approx(train["distance"].mean(), rel=1e-6)  # train only, not all rows
    assert not np.isclose(distance.mean, snap["distance"].mean(), rtol=1e-6)


def test_a_csv_and_a_json_lines_source_are_unioned_into_the_same_snapshot(ray_session, tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS)
    whole = _config_with_flights(tmp_path, pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False))
    flights.iloc[:1800].to_csv(tmp_path / "first.csv", index=False)
    flights.iloc[1800:].to_json(tmp_path / "rest.jsonl", orient="records", lines=True)
    data = smoke_dict()
    data["data"]["sources"] = [{"name": "first", "type": "csv", "path": str(tmp_path / "first.csv")},
                               {"name": "rest", "type": "json", "path": str(tmp_path / "rest.jsonl")},
                               *[s for s in data["data"]["sources"] if s["name"] != "flights"]]
    data["data"]["base"] = ["first", "rest"]
    (tmp_path / "union").mkdir()
    union = run_data_stage(load_config(write_config(tmp_path / "union", data)))
    assert union.snapshot.manifest.rows == 3000
    sources = json.loads((union.snapshot.path / "_manifest.json").read_text())["sources"]
    assert any(s.endswith("/first.csv") for s in sources) and any(s.endswith("/rest.jsonl") for s in sources)
    # The same rows from two formats make the same content (the fingerprint ignores representation).
    assert union.snapshot.snapshot_id == run_data_stage(whole).snapshot.snapshot_id


def _engines(tmp_path, data: dict):
    """The data stage of ``data`` through Ray Data (in_process_max_mb 0) and in the driver (the default)."""
    results = {}
    for engine, limit in (("ray", 0), ("driver", None)):
        folder = tmp_path / engine
        folder.mkdir()
        run = json.loads(json.dumps(data))
        if limit is not None:
            run["data"]["in_process_max_mb"] = limit
        results[engine] = run_data_stage(load_config(write_config(folder, run)))
    return results["ray"], results["driver"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(sorted(frame.columns)).reset_index(drop=True)[sorted(frame.columns)]


@pytest.mark.parametrize("case", ["plain", "duplicates", "csv and json lines", "named classes"])
def test_the_driver_path_publishes_what_ray_data_does(ray_session, tmp_path, case):
    flights = pd.read_csv(SMOKE_FLIGHTS)
    data = smoke_dict()
    if case == "named classes":  # a yes/no target: both paths fit the same class names and label rows alike
        data["data"] = {**data["data"], "joins": [], "sources": [
            {"name": "flights", "type": "csv", "path": str(SMOKE_FLIGHTS.parent / "flights_late.csv")}]}
        data["validation"]["columns"].pop("delayed")
        data["features"]["target"] = "late"
    if case == "duplicates":
        pd.concat([flights, flights.iloc[:40], flights.iloc[:3]]).to_csv(tmp_path / "f.csv", index=False)
        data["data"]["sources"][0]["path"] = str(tmp_path / "f.csv")
    elif case == "csv and json lines":
        flights.iloc[:1800].to_csv(tmp_path / "first.csv", index=False)
        flights.iloc[1800:].to_json(tmp_path / "rest.jsonl", orient="records", lines=True)
        data["data"]["sources"] = [{"name": "first", "type": "csv", "path": str(tmp_path / "first.csv")},
                                   {"name": "rest", "type": "json", "path": str(tmp_path / "rest.jsonl")},
                                   *[s for s in data["data"]["sources"] if s["name"] != "flights"]]
        data["data"]["base"] = ["first", "rest"]
    ray_path, driver = _engines(tmp_path, data)
    assert driver.snapshot.snapshot_id == ray_path.snapshot.snapshot_id
    assert driver.snapshot.manifest.rows == ray_path.snapshot.manifest.rows == 3000
    assert driver.snapshot.manifest.extra == ray_path.snapshot.manifest.extra
    assert driver.report.to_dict() == ray_path.report.to_dict()
    assert driver.split_rows == ray_path.split_rows and driver.features == ray_path.features
    if case == "named classes":
        assert driver.features.target_classes == ["no", "yes"]
        assert set(driver.datasets["train"].to_pandas()["late"]) == {0, 1}
    for split in ("train", "test"):
        a, b = driver.datasets[split].to_pandas(), ray_path.datasets[split].to_pandas()
        pd.testing.assert_frame_equal(_sorted(a), _sorted(b.astype(a.dtypes.to_dict())), check_exact=True)
    files = [pd.concat([pd.read_parquet(r.snapshot.path / f) for f in r.snapshot.manifest.files], ignore_index=True)
             for r in (driver, ray_path)]
    pd.testing.assert_frame_equal(_sorted(files[0]), _sorted(files[1].astype(files[0].dtypes.to_dict())),
                                  check_exact=True)


def test_both_paths_refuse_a_bad_cell_with_the_same_message(ray_session, tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False)
    flights.loc[1233, "distance"] = "far"
    flights.to_csv(tmp_path / "bad.csv", index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(tmp_path / "bad.csv")
    messages = []
    for engine, limit in (("ray", 0), ("driver", 64)):
        (tmp_path / engine).mkdir()
        data["data"]["in_process_max_mb"] = limit
        with pytest.raises(DataValidationError) as info:
            run_data_stage(load_config(write_config(tmp_path / engine, data)))
        messages.append(str(info.value).split("\nfull report:")[0])
        assert list_snapshots(tmp_path / engine / "work" / "snapshots") == []
    assert messages[0] == messages[1] and "bad.csv row 1,234: 'far'" in messages[0]
