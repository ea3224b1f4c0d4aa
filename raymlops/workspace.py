"""Where local state lives: one working folder (default ``./.raymlops``) holds everything a run writes.

    .raymlops/
      snapshots/<fingerprint>/     immutable Parquet snapshots + _manifest.json
      reports/                     validation reports (JSON)
      features/                    fitted feature pipelines (JSON)
      mlflow.db                    the embedded MLflow store (SQLite)
      checkpoints/ logs/
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, exited but not yet reaped, does not). Used by
    the records that name a process (a loop's lease, a service, a local cluster's nodes) to tell a live
    holder from one that died without cleaning up."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, payload: Any, mode: int | None = None) -> Path:
    """Write JSON durably and whole (see ``write_text_atomic``)."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str), mode=mode)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` survive a power cut (the entry lives in the folder, not the file)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write text to a temp file beside ``path``, fsync it, rename it into place and fsync the folder:
    readers see the old file or the new one, never half of one, and a crash right after keeps the new one.
    ``mode``: the file's permissions (default: a normal file's, after the umask; 0o600 for a secret)."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_bytes_atomic(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """``write_text_atomic`` for bytes (a Parquet file written in memory, say)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, (0o666 & ~_umask()) if mode is None else mode)  # mkstemp creates it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append whole lines to an append-only log and fsync them. A last line left torn by a crash is ended
    first, so the new lines are never glued to it (readers skip the torn one: ``read_json_lines``)."""
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        torn = False
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        data = "".join(line.rstrip("\n") + "\n" for line in lines).encode("utf-8")
        f.write((b"\n" if torn else b"") + data)
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path: str | Path) -> tuple[list[Any], int]:
    """The JSON values of an append-only log, and how many lines were skipped because they do not parse
    (a line torn by a crash, or damaged): one bad line never stops a reader of the rest."""
    path = Path(path)
    if not path.is_file():
        return [], 0
    values, skipped = [], 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                values.append(json.loads(raw))
            except ValueError:
                skipped += 1
    return values, skipped


def publish_folder(target: str | Path, build: Callable[[Path], Path], prefix: str = ".download-") -> Path:
    """Make folder ``target`` whole or not at all: ``build(tmp)`` fills a temp folder beside it and returns
    the folder to publish (``tmp`` or one inside it), which is renamed into place. When another process
    published the same target first, its copy is kept and ours dropped."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        landed = build(tmp)
        try:
            os.rename(landed, target)
        except OSError:
            if not target.is_dir():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
