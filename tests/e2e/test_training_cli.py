"""The training stage through the CLI: the flagship config, and a gate that fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from raymlops.serving.client import Client
from raymlops.registry.store import Registry
from raymlops.model.inputs import probe_record
from tests.e2e.test_cli import ENV, RAYMLOPS, cli
from tests.helpers import REPO, free_port, interrupt, smoke_config, smoke_dict, write_config

pytestmark = pytest.mark.e2e


def test_failing_gate_exits_nonzero_naming_it_and_registers_nothing(tmp_path):
    config = smoke_config(tmp_path, evaluation={"gates": ["auc >= 0.55", "pr_auc >= 0.95"]})
    done = cli("run", str(config), "--num-cpus", "2")
    assert done.returncode == 1
    assert "GateFailed" in done.stderr and "gate 'pr_auc >= 0.95'" in done.stderr
    message = done.stderr.split("GateFailed", 1)[1]
    assert "auc >= 0.55'" not in message.split("nothing was registered")[0]  # only the failing gate is named
    assert "Its test metrics: auc 0." in message and "pr_auc 0." in message  # by how much it missed
    assert "evaluation.json" in message
    assert Registry.for_workdir(tmp_path / "work").list_versions("flights-smoke") == []


def test_the_readme_walkthrough_from_a_csv_of_your_own(tmp_path):
    """Issue 15: the README's "from your own CSV" path, command by command, as a new user takes it, on a
    shipped CSV whose target is named classes (late: yes/no) and whose inputs have a bound on one side
    only: profile, validate-config, run, serve, predict and feedback by name over HTTP, status while
    serving, batch predict. Before: string labels crashed training 50 s in (`could not convert string to
    float: 'no'`), and `serve` failed with a bare `'max'` on a `min:` without `max:`."""
    csv = REPO / "examples" / "smoke" / "flights_late.csv"
    proposed = cli("profile", str(csv), "-o", str(tmp_path / "validation.yaml"))
    assert proposed.returncode == 0, proposed.stderr[-3000:]
    validation = yaml.safe_load((tmp_path / "validation.yaml").read_text())["validation"]
    assert validation["columns"]["late"]["allowed"] == ["no", "yes"]
    # The user's edits of configs/smoke.yaml: one source, the target, the pasted validation section.
    data = smoke_dict()
    data["data"] = {**data["data"], "sources": [{"name": "flights", "type": "csv", "path": str(csv)}], "joins": []}
    data["features"]["target"] = "late"
    assert validation["columns"]["time_hour"]["type"] == "timestamp" and "max" not in validation["columns"]["time_hour"]
    # min only, max only, each also a request contract (the profile's own ranges bound training data only)
    validation["columns"]["temp"] = {"type": "float", "min": -20, "max_null_fraction": 0.1, "request_bounds": True}
    validation["columns"]["precip"] = {"type": "float", "max": 5, "max_null_fraction": 0.1, "request_bounds": True}
    data["validation"] = validation
    data["training"] = {**data["training"], "epochs": 2}
    data["evaluation"] = {"gates": []}  # 2 epochs: this test is about the path, not the model's quality
    port = free_port()
    data["serving"] = {"port": port, "min_replicas": 1, "max_replicas": 1}
    config = write_config(tmp_path, data)
    checked = cli("validate-config", str(config))
    assert checked.returncode == 0, checked.stderr[-3000:]
    done = cli("run", str(config), "--num-cpus", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered" in done.stdout and "flights-smoke v1" in done.stdout, done.stdout[-3000:]

    key = "walkthrough-key"
    server = subprocess.Popen([*RAYMLOPS, "serve", str(config), "--num-cpus", "2"], cwd=REPO,
                              env={**ENV, "RAYMLOPS_API_KEY": key}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(server.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while not any("serving flights-smoke at" in line for line in lines):
            assert server.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        schema = Client(url).model_info()["input_schema"]
        assert "late" not in schema  # the target is no input
        rows = pd.read_csv(csv).head(40)
        records = [{c: (None if pd.isna(r[c]) else r[c]) for c in schema} for r in rows.to_dict("records")]
        answer = requests.post(f"{url}/v1/predict", json={"records": records}, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert {p["class_name"] for p in predictions} <= {"no", "yes"}
        assert all(set(p["probabilities"]) == {"no", "yes"} and p["probabilities"]["yes"] == p["score"]
                   and p["class_name"] == ("yes" if p["score"] >= 0.5 else "no") for p in predictions)
        labels = [{"request_id": answer.json()["request_id"], "index": i, "label": v}
                  for i, v in enumerate(rows["late"])]
        fed = requests.post(f"{url}/v1/feedback", json={"items": labels}, headers={"X-API-Key": key}, timeout=30)
        assert fed.status_code == 200 and fed.json() == {"accepted": 40, "unknown": []}, fed.text
        wrong = requests.post(f"{url}/v1/feedback", headers={"X-API-Key": key}, timeout=30, json={
            "items": [{"request_id": answer.json()["request_id"], "index": 0, "label": "maybe"}]})
        assert wrong.status_code == 422 and "'maybe' is not a class" in wrong.text, wrong.text

        good = probe_record(schema)
        assert requests.post(f"{url}/v1/predict", json={"record": {**good, "temp": 1e6, "precip": -3}},
                             timeout=30).status_code == 200  # no max on temp, no min on precip
        # Issue 15.11: the profile's observed ranges are not request contracts: a later date and a distance
        # beyond the largest seen in the CSV are served (the monitor measures them as drift)
        assert validation["columns"]["distance"]["max"] < 9000
        later = {**good, "distance": 9000.0, "time_hour": "2031-06-01T12:00:00+00:00"}
        assert requests.post(f"{url}/v1/predict", json={"record": later}, timeout=30).status_code == 200
        refused = requests.post(f"{url}/v1/predict", json={"record": {**good, "temp": -30, "precip": 6}}, timeout=30)
        assert refused.status_code == 422
        why = {tuple(d["loc"]): d["msg"] for d in refused.json()["detail"]}
        assert why[("body", "record", "temp")] == "Input should be greater than or equal to -20"
        assert why[("body", "record", "precip")] == "Input should be less than or equal to 5"
        described = json.dumps(requests.get(f"{url}/openapi.json", timeout=30).json())
        assert "float, >= -20.0" in described and "float, <= 5.0" in described
        # Issue 15.1: `status` while `serve` runs hung for 740 s; it finds the service and answers in seconds
        asked = time.monotonic()
        status = cli("status", str(config), "--json", timeout=60)
        took = time.monotonic() - asked
        assert status.returncode == 0, status.stderr[-3000:]
        live = json.loads(status.stdout)
        assert "error" not in live["evidence"], live["evidence"]
        assert "quality" in live["evidence"] and live["champion"] == "1"
        print(f"status while serving answered in {took:.1f} s")
        assert took < 10
    finally:
        interrupt(server)
    reader.join(timeout=30)
    said = "".join(lines)  # Serve's INFO lines and Ray's `(raylet)` errors go to the command's log file
    assert "INFO" not in said and "(raylet)" not in said and "serve stopping" in said, said[-3000:]
    after = cli("status", str(config), "--json", timeout=60)
    assert after.returncode == 0 and "nothing is served" in json.loads(after.stdout)["evidence"]["error"]

    scored = cli("predict", "-m", "flights-smoke", "-i", str(csv), "-o", str(tmp_path / "scored"),
                 "--config", str(config))
    assert scored.returncode == 0 and "scored 3,000 rows" in scored.stdout, scored.stderr[-3000:]
    batch = pd.read_parquet(tmp_path / "scored")
    assert set(batch["class_name"]) <= {"no", "yes"} and batch["score"].between(0, 1).all()
    served = [p["score"] for p in predictions]
    assert np.allclose(batch["score"].head(40), served, atol=1e-5)  # the same scores as over HTTP


@pytest.fixture(scope="module")
def flights_trained(tmp_path_factory):
    """The flagship config trained once through the CLI (January-March, tested on April)."""
    tmp_path = tmp_path_factory.mktemp("flights")
    prep = subprocess.run([sys.executable, "examples/flights/prepare.py", "--out", "examples/flights/data"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    data = yaml.safe_load((REPO / "configs" / "flights.yaml").read_text())
    for src in data["data"]["sources"]:
        src["path"] = str((REPO / "configs" / src["path"]).resolve())
    data["workdir"] = str(tmp_path / "work")
    data["serving"] = {**data.get("serving", {}), "port": free_port(), "min_replicas": 1, "max_replicas": 1}
    config = tmp_path / "flights.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    done = cli("run", str(config), "--num-cpus", "2", "--run-name", "q1", timeout=900)
    return tmp_path, config, done


def test_flights_config_trains_on_first_quarter_and_registers_with_lineage(flights_trained):
    tmp_path, _, done = flights_trained
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


def test_served_flights_champion_answers_like_batch_prediction_on_1000_test_rows(flights_trained):
    """`raymlops serve` over HTTP and `raymlops predict` over files give the same scores (to 1e-6)."""
    tmp_path, config, done = flights_trained
    assert done.returncode == 0, done.stderr[-3000:]
    snapshot = next((tmp_path / "work" / "snapshots").iterdir())
    rows = pd.concat([pd.read_parquet(f) for f in sorted(snapshot.glob("*.parquet"))], ignore_index=True)
    test = rows[rows["time_hour"] >= pd.Timestamp("2013-04-01", tz="UTC")].sample(1000, random_state=7)
    test.to_parquet(tmp_path / "april.parquet")

    scored = cli("predict", "--model", "flights-delay", "--input", str(tmp_path / "april.parquet"),
                 "--output", str(tmp_path / "scored"), "--workdir", str(tmp_path / "work"), "--num-cpus", "2")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "scored 1,000 rows with flights-delay v1" in scored.stdout
    offline = pd.read_parquet(tmp_path / "scored")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scored")] == []  # no temp left

    bad = test.head(50).astype({"distance": object})
    bad.loc[bad.index[3], "distance"] = "far"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    refused = cli("predict", "--model", "flights-delay", "--input", str(tmp_path / "bad.csv"),
                  "--output", str(tmp_path / "bad-out"), "--workdir", str(tmp_path / "work"), "--num-cpus", "2")
    assert refused.returncode == 1 and "DataValidationError" in refused.stderr
    assert "bad.csv" in refused.stderr and "'distance'" in refused.stderr and "far" in refused.stderr
    assert not (tmp_path / "bad-out").exists()
    unknown = cli("predict", "--model", "flights-delay/9", "--input", str(tmp_path / "april.parquet"),
                  "--output", str(tmp_path / "x"), "--workdir", str(tmp_path / "work"))
    assert unknown.returncode == 1 and "RegistryError" in unknown.stderr and "version 9" in unknown.stderr

    # A port free now: the one the fixture wrote into the config minutes ago may have been taken since (this
    # command once exited 1 in CI before it was ready)
    port = free_port()
    server = subprocess.Popen([*RAYMLOPS, "serve", str(config), "--num-cpus", "2", "--port", str(port)],
                              cwd=REPO, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(server.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}"
        client = Client(url)
        deadline = time.monotonic() + 180
        # Ready when the command says so (it prints the URL once its own readiness wait is over), not
        # merely when /readyz first answers: interrupting it in between would be a different test.
        while not any("serving flights-delay at" in line for line in lines):
            assert server.poll() is None and time.monotonic() < deadline, \
                "raymlops serve did not become ready:\n" + "".join(lines)[-3000:]
            time.sleep(0.5)
        client.ready()
        schema = client.model_info()["input_schema"]
        records = json.loads(offline[list(schema)].to_json(orient="records", date_format="iso"))
        served = []
        for i in range(0, len(records), 200):
            answer = client.predict(records[i:i + 200])
            assert answer["model"] == "flights-delay" and answer["version"] == "1"
            served += [p["score"] for p in answer["predictions"]]
        np.testing.assert_allclose(served, offline["score"].to_numpy(), rtol=0, atol=1e-6)
    finally:
        interrupt(server)
    reader.join(timeout=30)
    log = "".join(lines)
    assert "serving flights-delay at" in log and "champion v1" in log, log[-2000:]
