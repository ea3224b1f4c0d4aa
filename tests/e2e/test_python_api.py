"""The Python API from a plain Python session, as a notebook uses it: run, load_model, predict."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from tests.helpers import REPO, SMOKE_FLIGHTS, SMOKE_WEATHER, smoke_config

pytestmark = pytest.mark.e2e
ENV = {**os.environ, "RAYMLOPS_PROGRESS": "0"}


def test_a_python_session_trains_registers_and_scores_as_raymlops_predict_does(tmp_path):
    config = smoke_config(tmp_path)
    rows = pd.read_csv(SMOKE_FLIGHTS).merge(pd.read_csv(SMOKE_WEATHER), on=["origin", "time_hour"], how="left")
    rows = rows.sample(300, random_state=0).reset_index(drop=True).assign(row_id=range(300))
    rows.to_parquet(tmp_path / "rows.parquet")
    script = textwrap.dedent(f"""
        import pandas as pd
        import raymlops

        result = raymlops.run({str(config)!r})
        print("registered", result.training.version, sorted(result.training.aliases))
        model = raymlops.load_model("flights-smoke", config={str(config)!r})
        frame = pd.read_parquet({str(tmp_path / "rows.parquet")!r})
        pd.DataFrame({{"row_id": frame["row_id"], "score": model.predict(frame)}}).to_parquet(
            {str(tmp_path / "api.parquet")!r})
        print("version", model.version)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered 1 ['challenger', 'champion']" in done.stdout and "version 1" in done.stdout

    cli = subprocess.run([sys.executable, "-m", "raymlops.cli", "predict", "-m", "flights-smoke", "-i",
                          str(tmp_path / "rows.parquet"), "-o", str(tmp_path / "cli"), "--config", str(config),
                          "--num-cpus", "2"], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    ours = pd.read_parquet(tmp_path / "api.parquet").sort_values("row_id")
    theirs = pd.read_parquet(tmp_path / "cli").sort_values("row_id")
    assert len(ours) == len(theirs) == 300 and ours["score"].between(0, 1).all()
    np.testing.assert_array_equal(ours["score"].to_numpy(), theirs["score"].to_numpy())
