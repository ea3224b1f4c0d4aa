"""Planning a Ray job submission (pure): what is uploaded, what is run, and what would be lost."""

from __future__ import annotations

import shlex

import pytest
import yaml

from raymlops.config import load_config
from raymlops.errors import ClusterError
from raymlops.ops.jobs import ENV_PASSED, plan_submission, resolve_address
from raymlops.ops.ray_auth import auth_headers, load_token
from tests.helpers import smoke_dict


def _project(tmp_path, workdir=".raymlops", data_path="data/flights.csv"):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "flights.csv").write_text("x\n1\n")
    cfg = smoke_dict()
    cfg["workdir"] = workdir
    cfg["data"]["sources"] = [cfg["data"]["sources"][0] | {"path": data_path}]
    cfg["data"]["joins"] = []
    path = project / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return project, path


def test_plan_runs_the_config_from_the_uploaded_project_with_a_shared_workdir(tmp_path, monkeypatch):
    for name in ENV_PASSED:
        monkeypatch.delenv(name, raising=False)
    project, path = _project(tmp_path)
    plan = plan_submission(load_config(path), path, project_root=project, workdir="/mnt/shared/rm",
                           run_name="r 1", pip=["polars==1.0"], env={"A": "b"})
    assert shlex.split(plan.entrypoint) == ["python", "-m", "raymlops", "run", "pipeline.yaml",
                                            "--workdir", "/mnt/shared/rm", "--run-name", "r 1"]
    assert plan.runtime_env["working_dir"] == str(project.resolve())
    assert ".venv" in plan.runtime_env["excludes"] and ".raymlops" in plan.runtime_env["excludes"]
    assert plan.runtime_env["pip"] == ["polars==1.0"] and plan.runtime_env["env_vars"] == {"A": "b"}
    assert any("SQLite" in w for w in plan.warnings)  # no tracking server named


def test_a_workdir_inside_the_project_is_refused_with_the_fix(tmp_path):
    project, path = _project(tmp_path)
    with pytest.raises(ClusterError) as err:
        plan_submission(load_config(path), path, project_root=project)
    assert "lies inside the project" in str(err.value) and "--workdir" in str(err.value)


def test_relative_workdir_override_uri_workdir_and_config_outside_project_are_refused(tmp_path):
    project, path = _project(tmp_path)
    cfg = load_config(path)
    with pytest.raises(ClusterError, match="must be an absolute path"):
        plan_submission(cfg, path, project_root=project, workdir="shared")
    with pytest.raises(ClusterError, match="URI is not supported"):
        plan_submission(cfg, path, project_root=project, workdir="s3://bucket/x")
    with pytest.raises(ClusterError, match="outside the project"):
        plan_submission(cfg, path, project_root=project / "data", workdir="/mnt/shared")


def test_missing_project_data_is_an_error_and_outside_data_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    project, path = _project(tmp_path, data_path="data/missing-*.csv")
    with pytest.raises(ClusterError, match=r"data.sources\[0\] \(flights\).*does not exist"):
        plan_submission(load_config(path), path, project_root=project, workdir="/mnt/shared")
    project2, path2 = _project(tmp_path / "b", data_path="/mnt/data/flights.csv")
    plan = plan_submission(load_config(path2), path2, project_root=project2, workdir="/mnt/shared")
    assert plan.warnings == ["data.sources[0] (flights) reads /mnt/data/flights.csv: every node must see that path"]
    assert plan.runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_addresses_normalise_to_the_jobs_api_and_ray_client_addresses_are_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAYMLOPS_CLUSTER_DIR", str(tmp_path / "none"))
    assert resolve_address("10.0.0.5:8265") == "http://10.0.0.5:8265"
    assert resolve_address("https://ray.example.com/") == "https://ray.example.com"
    with pytest.raises(ClusterError, match="Ray Client address"):
        resolve_address("ray://head:10001")
    with pytest.raises(ClusterError, match="raymlops cluster up"):
        resolve_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")
    assert resolve_address(None) == "http://head:8265"


def test_token_is_found_where_ray_looks_for_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert load_token() is None and auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert load_token() == "from-file"
    named = tmp_path / "token"
    named.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(named))
    assert load_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    named.write_text("")
    with pytest.raises(ClusterError, match="is empty"):
        load_token()


def test_secrets_go_to_a_job_by_reference_never_by_value(tmp_path, monkeypatch):
    """Issue 18.7: Ray shows a job's runtime_env to every token holder, so a password must not be in it."""
    for name in ENV_PASSED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "raymlops")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-sekret")
    project, path = _project(tmp_path)
    plan = plan_submission(load_config(path), path, project_root=project, workdir="/mnt/shared/rm")
    assert plan.runtime_env["env_vars"] == {"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
                                            "MLFLOW_TRACKING_USERNAME": "raymlops",
                                            "MLFLOW_TRACKING_PASSWORD": "${MLFLOW_TRACKING_PASSWORD}"}
    assert "hunter2-sekret" not in repr(plan)
    assert any("resolved from the environment of the cluster's nodes" in w for w in plan.warnings)
    with pytest.raises(ClusterError, match=r"--env DB_PASSWORD=\.\.\. would send a secret's value.*'\$\{DB_PASSWORD\}'"):
        plan_submission(load_config(path), path, project_root=project, workdir="/mnt/shared/rm",
                        env={"DB_PASSWORD": "hunter2-sekret"})
    ok = plan_submission(load_config(path), path, project_root=project, workdir="/mnt/shared/rm",
                         env={"DB_PASSWORD": "${DB_PASSWORD}", "LOG_LEVEL": "debug"})
    assert ok.runtime_env["env_vars"]["DB_PASSWORD"] == "${DB_PASSWORD}"
