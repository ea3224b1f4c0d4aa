"""Shared test helpers: configs pointed at a temp working folder, and small data files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"
SMOKE_FLIGHTS = REPO / "examples" / "smoke" / "flights.csv"
SMOKE_WEATHER = REPO / "examples" / "smoke" / "weather.csv"


def smoke_dict() -> dict[str, Any]:
    """The smoke config as a dict with its paths made absolute."""
    data = yaml.safe_load(SMOKE_CONFIG.read_text())
    for src in data["data"]["sources"]:
        if "path" in src:
            src["path"] = str((SMOKE_CONFIG.parent / src["path"]).resolve())
    return data


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    """Write a config whose working folder is inside ``tmp_path``."""
    data = copy.deepcopy(data)
    data["workdir"] = str(tmp_path / "work")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def smoke_config(tmp_path: Path, **section_overrides: Any) -> Path:
    data = smoke_dict()
    data.update(section_overrides)
    return write_config(tmp_path, data)
