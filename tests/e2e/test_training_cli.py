"""The training stage through the CLI: the flagship config, and a gate that fails."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from raymlops.registry import Registry
from tests.e2e.test_cli import cli
from tests.helpers import REPO, smoke_config

pytestmark = pytest.mark.e2e


def test_failing_gate_exits_nonzero_naming_it_and_registers_nothing(tmp_path):
    config = smoke_config(tmp_path, evaluation={"gates": ["auc >= 0.55", "pr_auc >= 0.95"]})
    done = cli("run", str(config), "--num-cpus", "2")
    assert done.returncode == 1
    assert "GateFailed" in done.stderr and "gate 'pr_auc >= 0.95'" in done.stderr
    assert "auc >= 0.55'" not in done.stderr.split("GateFailed", 1)[1]  # only the failing gate is named
    assert Registry.for_workdir(tmp_path / "work").list_versions("flights-smoke") == []


def test_flights_config_trains_on_first_quarter_and_registers_with_lineage(tmp_path):
    prep = subprocess.run([sys.executable, "examples/flights/prepare.py", "--out", "examples/flights/data"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    data = yaml.safe_load((REPO / "configs" / "flights.yaml").read_text())
    for src in data["data"]["sources"]:
        src["path"] = str((REPO / "configs" / src["path"]).resolve())
    data["workdir"] = str(tmp_path / "work")
    config = tmp_path / "flights.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = cli("run", str(config), "--num-cpus", "2", "--run-name", "q1", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "109,119" in done.stdout and "auc" in done.stdout and "PASS  auc >= 0.60" in done.stdout
    assert "flights-delay v1 (challenger, champion)" in done.stdout

    reg = Registry.for_workdir(tmp_path / "work")
    client = MlflowClient(reg.tracking_uri)
    mv = client.get_model_version_by_alias("flights-delay", "champion")
    run = client.get_run(mv.run_id)
    assert run.info.run_name == "q1" and run.data.metrics["test_auc"] >= 0.60
    assert run.data.params["data.train_rows"] == "65919" and run.data.params["data.test_rows"] == "28432"
    for key in ("raymlops.data_fingerprint", "raymlops.config_hash", "raymlops.code_version", "raymlops.run_id"):
        assert mv.tags[key], key
