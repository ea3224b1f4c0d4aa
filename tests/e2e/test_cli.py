"""The CLI as a user runs it: real processes, real local Ray, exit codes and messages."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raymlops.data.versioning import list_snapshots
from tests.helpers import REPO, SMOKE_FLIGHTS, smoke_config, smoke_dict, write_config

pytestmark = pytest.mark.e2e
RAYMLOPS = [sys.executable, "-m", "raymlops.cli"]
ENV = {**os.environ, "RAYMLOPS_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*RAYMLOPS, *args], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


def test_run_smoke_then_list_and_show_snapshot(tmp_path):
    config = smoke_config(tmp_path)
    done = cli("run", str(config), "--num-cpus", "2")
    assert done.returncode == 0, done.stderr
    # A run that works shows what concerns the user, not Ray's notice that token auth is on (it stays on),
    # Ray Data's deprecation warnings (once per epoch) or MLflow's INFO lines (issue 15, item 8): only
    # raymlops' own `  stage message` progress lines.
    assert "Token authentication is enabled" not in done.stderr
    noise = [line for line in done.stderr.splitlines() if line.strip() and not re.match(r"^ *[a-z]+ [^ ]", line)]
    assert noise == [] and "Warning" not in done.stderr and "INFO" not in done.stderr, done.stderr[-3000:]
    snaps = list_snapshots(tmp_path / "work" / "snapshots")
    assert len(snaps) == 1
    sid = snaps[0].snapshot_id
    assert sid in done.stdout and "train" in done.stdout
    listed = cli("data", "list", "--config", str(config))
    assert listed.returncode == 0 and sid in listed.stdout and "3,000" in listed.stdout
    shown = cli("data", "show", sid, "--workdir", str(tmp_path / "work"))
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["rows"] == 3000
    # Issue 15, item 7: which rows went to which split, as the data stage assigned them
    test_rows = cli("data", "show", sid, "--config", str(config), "--split", "test", "-o", str(tmp_path / "test.parquet"))
    assert test_rows.returncode == 0, test_rows.stderr
    held_out = int(re.search(r"test ([\d,]+)", done.stdout).group(1).replace(",", ""))
    assert len(pd.read_parquet(tmp_path / "test.parquet")) == held_out and f"{held_out:,} test rows" in test_rows.stdout
    assert len(pd.read_parquet(snaps[0].path)) == 3000  # the snapshot folder reads as one table
    no_config = cli("data", "show", sid, "--workdir", str(tmp_path / "work"), "--split", "test", "-o", "x.parquet")
    assert no_config.returncode == 1 and "--split needs --config" in no_config.stderr
    missing = cli("data", "show", "nope", "--workdir", str(tmp_path / "work"))
    assert missing.returncode == 1 and "SnapshotError" in missing.stderr and sid in missing.stderr
    # The run trained, gated and registered the first version as champion.
    assert "flights-smoke v1 (challenger, champion)" in done.stdout and "PASS" in done.stdout
    # Slice metrics in the summary, not only in an MLflow artifact (issue 15, item 7)
    slice_line = re.search(r"slice origin\s*│\s*auc, worst first: (\w+) (0\.\d+), (\w+) (0\.\d+)", done.stdout)
    assert slice_line and float(slice_line.group(2)) <= float(slice_line.group(4)), done.stdout[-3000:]
    models = cli("models", "flights-smoke", "--config", str(config))
    assert models.returncode == 0 and "v1" in models.stdout and "champion" in models.stdout
    runs = cli("runs", str(config))
    assert runs.returncode == 0 and "FINISHED" in runs.stdout and "test auc" in runs.stdout
    no_previous = cli("rollback", "flights-smoke", "--config", str(config))
    assert no_previous.returncode == 1 and "RegistryError" in no_previous.stderr
    absent = cli("promote", "flights-smoke", "9", "--config", str(config))
    assert absent.returncode == 1 and "no version 9" in absent.stderr


def test_bad_csv_fails_with_report_and_no_snapshot(tmp_path):
    flights = pd.read_csv(SMOKE_FLIGHTS, dtype=str, keep_default_na=False)
    flights.loc[1233, "month"] = "March"
    flights.loc[41, "distance"] = "-5"
    flights.loc[7, "origin"] = "XYZ"
    bad = tmp_path / "bad.csv"
    flights.to_csv(bad, index=False)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(bad)
    done = cli("run", str(write_config(tmp_path, data)), "--num-cpus", "2")
    assert done.returncode == 1
    err = done.stderr
    assert "DataValidationError" in err and "Traceback" not in err
    assert "month: type" in err and "bad.csv row 1,234: 'March'" in err
    assert "distance: range" in err and "bad.csv row 42:" in err
    assert "origin: allowed" in err and "bad.csv row 8: 'XYZ'" in err
    assert list_snapshots(tmp_path / "work" / "snapshots") == []
    assert "Ray at" not in err  # small file sources are checked before Ray starts: no cluster's start-up


def test_malformed_csv_row_is_one_line_naming_file_row_and_line(tmp_path):
    """Issue 15: a field too many printed Ray's and pyarrow's tracebacks, with the batch's first row."""
    lines = SMOKE_FLIGHTS.read_text().splitlines(keepends=True)
    lines[1500] = lines[1500].rstrip("\n") + ",extra\n"  # data row 1,500 is line 1,501 (after the header)
    bad = tmp_path / "ragged.csv"
    bad.write_text("".join(lines))
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(bad)
    done = cli("run", str(write_config(tmp_path, data)), "--num-cpus", "2", "--data-only")
    assert done.returncode == 1
    assert f"DataValidationError: {bad} row 1,500 (line 1,501): 18 fields where the header has 17: " in done.stderr
    assert "Traceback" not in done.stderr and "RayTaskError" not in done.stderr and "ERROR" not in done.stderr


def test_a_misspelled_column_is_named_with_the_closest_by_validate_config_and_at_once_by_run(tmp_path):
    """Issue 15: a target the data lacks passed validate-config, and run failed a minute later with a
    KeyError in a Ray traceback."""
    data = smoke_dict()
    data["features"]["target"] = "delayd"
    data["features"]["numeric"][1] = {"column": "tmp"}   # from the joined weather source
    config = write_config(tmp_path, data)
    says = ["features.target: no column 'delayd' in the data (flights joined with weather); did you mean 'delayed'",
            "features.numeric[1].column: no column 'tmp' in the data (flights joined with weather); did you mean 'temp'"]
    checked = cli("validate-config", str(config))
    assert checked.returncode == 1 and "ConfigError: 2 problems in" in checked.stderr
    assert all(s in checked.stderr for s in says), checked.stderr
    assert f"{config}:" in checked.stderr  # file and line
    started = time.monotonic()
    done = cli("run", str(config), "--num-cpus", "2")
    assert done.returncode == 1 and "ConfigError" in done.stderr and all(s in done.stderr for s in says), done.stderr
    assert "Traceback" not in done.stderr and "KeyError" not in done.stderr
    assert "reading sources" not in done.stderr and "Ray at" not in done.stderr and time.monotonic() - started < 40
    assert not (tmp_path / "work" / "snapshots").exists() or list_snapshots(tmp_path / "work" / "snapshots") == []


def test_validate_config_schema_and_profile(tmp_path):
    ok = cli("validate-config", str(REPO / "configs" / "flights.yaml"))
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "configs" / "smoke.yaml").read_text().replace("drop_duplicates:", "drop_dupes:"))
    done = cli("validate-config", str(bad))
    assert done.returncode == 1
    assert "ConfigError" in done.stderr and "data.cleaning.drop_dupes" in done.stderr and "bad.yaml:" in done.stderr
    assert "unknown key; did you mean 'drop_duplicates'" in done.stderr
    schema = cli("schema")
    assert schema.returncode == 0 and "validation" in json.loads(schema.stdout)["properties"]
    out = tmp_path / "proposal.yaml"
    prof = cli("profile", str(SMOKE_FLIGHTS), "-o", str(out))
    assert prof.returncode == 0, prof.stderr
    proposal = yaml.safe_load(out.read_text())
    data = smoke_dict()
    data["validation"] = proposal["validation"]
    assert cli("validate-config", str(write_config(tmp_path, data, "profiled.yaml"))).returncode == 0
    missing = cli("run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "config file not found" in missing.stderr


def _big_csv(path: Path, copies: int) -> None:
    flights = pd.read_csv(SMOKE_FLIGHTS)
    parts = []
    for i in range(copies):
        part = flights.copy()
        part["flight"] = part["flight"] + 10_000 * i   # distinct rows, so none are deduplicated
        parts.append(part)
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)


def test_killed_during_snapshot_write_leaves_nothing_that_looks_complete(tmp_path):
    big = tmp_path / "big.csv"
    _big_csv(big, copies=40)
    data = smoke_dict()
    data["data"]["sources"][0]["path"] = str(big)
    config = write_config(tmp_path, data)
    snapshots = tmp_path / "work" / "snapshots"
    proc = subprocess.Popen([*RAYMLOPS, "run", str(config), "--num-cpus", "2", "--data-only"], env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    killed_while_writing = False
    while time.time() < deadline and proc.poll() is None:
        # Killed once Parquet files are being written into the temp folder, not merely when it exists.
        if snapshots.is_dir() and any(next(p.rglob("*.parquet"), None) for p in snapshots.iterdir()
                                      if p.name.startswith(".tmp-")):
            os.killpg(proc.pid, signal.SIGKILL)
            killed_while_writing = True
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_while_writing, "the run finished or timed out before its snapshot write began"
    assert list_snapshots(snapshots) == []
    assert not [p for p in snapshots.iterdir() if not p.name.startswith(".tmp-")]
    # A rerun clears the dead writer's temp folder and publishes a complete snapshot.
    done = cli("run", str(config), "--num-cpus", "2", "--data-only")
    assert done.returncode == 0, done.stderr
    snaps = list_snapshots(snapshots)
    assert len(snaps) == 1 and snaps[0].manifest.rows == 120_000
    assert [p.name for p in snapshots.iterdir()] == [snaps[0].snapshot_id]
