"""Where local state lives: one working folder (default ``./.raymlops``) holds everything a run writes.

    .raymlops/
      snapshots/<fingerprint>/     immutable Parquet snapshots + manifest.json
      reports/                     validation reports (JSON)
      features/                    fitted feature pipelines (JSON)
      mlflow.db                    the embedded MLflow store (SQLite)
      checkpoints/ logs/
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

    def ensure(self) -> Workspace:
        for path in (self.snapshots, self.reports, self.features, self.checkpoints, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        return self


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write JSON to a temp file beside ``path`` and rename it into place: never half a file."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to a temp file beside ``path`` and rename it into place: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates it private; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
