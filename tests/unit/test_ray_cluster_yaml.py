"""cluster/ray-cluster.yaml against Ray's own autoscaler schema, plus the settings raymlops relies on."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG = Path(__file__).resolve().parents[2] / "cluster" / "ray-cluster.yaml"


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(CONFIG.read_text())


def test_autoscaler_config_passes_rays_schema_after_rays_own_defaults(raw):
    validate_config(prepare_config(copy.deepcopy(raw)))


def test_the_schema_check_has_teeth(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["cpu_worker"]["max_wrokers"] = 6  # a typo Ray must reject
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_every_node_starts_with_token_auth_and_the_dashboard_stays_on_loopback(raw):
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])
    assert "~/.ray/auth_token" in raw["file_mounts"]


def test_gpu_and_cpu_worker_types_autoscale_from_a_cpu_free_head(raw):
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] >= 1
    assert types["cpu_worker"]["max_workers"] > types["cpu_worker"]["min_workers"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= raw["max_workers"]
