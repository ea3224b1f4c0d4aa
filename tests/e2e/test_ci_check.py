"""`raymlops ci check` as a CI workflow calls it: gates, a markdown summary, the exit code, promotion."""

from __future__ import annotations

import pytest
import yaml

from raymlops.registry.store import Registry
from tests.e2e.test_cli import cli
from tests.helpers import smoke_config

pytestmark = pytest.mark.e2e


def test_ci_check_promotes_on_main_then_fails_a_pull_request_against_that_champion(tmp_path):
    config = smoke_config(tmp_path)
    summary = tmp_path / "summary.md"
    main = cli("ci", "check", str(config), "--summary", str(summary), "--promote", "--run-name", "main-1",
               "--num-cpus", "2")
    assert main.returncode == 0, main.stderr[-3000:]
    text = summary.read_text()
    assert "candidate passes its gates" in text and "Registered as version 1 and promoted to `champion`." in text
    registry = Registry.for_workdir(tmp_path / "work")
    assert registry.version_for_alias("flights-smoke", "champion") == "1"

    data = yaml.safe_load(config.read_text())
    data["evaluation"]["gates"] = ["auc >= champion - 0.05", "pr_auc >= 0.95"]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    pr = cli("ci", "check", str(config), "--summary", str(summary), "--run-name", "pr-2", "--num-cpus", "2")
    assert pr.returncode == 1
    text = summary.read_text()
    assert "candidate FAILS its gates" in text and "champion v1" in text
    assert "| `pr_auc >= 0.95` | **FAIL** |" in text and "| `auc >= champion - 0.05` | pass |" in text
    assert "Nothing was registered." in text and text in pr.stdout
    assert [str(v.version) for v in registry.list_versions("flights-smoke")] == ["1"]
