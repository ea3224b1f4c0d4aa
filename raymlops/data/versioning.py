"""Content fingerprints and immutable, atomically published snapshots (pure: pandas, pyarrow, files).

The fingerprint of a dataset is a hash of its schema, its row count and two order-independent sums of
64-bit row hashes: the same rows give the same id whatever the file order or partitioning; one changed
cell gives a new id. A snapshot is a folder ``<root>/<fingerprint>/`` of Parquet files plus
``_manifest.json`` (underscored, so ``pd.read_parquet(folder)`` and Ray Data skip it as Parquet readers
skip ``_``-files; snapshots written as ``manifest.json`` before still load). It is written under ``<root>/.tmp-*`` and renamed into place only when complete, so
a crash never leaves a snapshot that looks complete; ``list_snapshots`` shows only folders whose
manifest is present and consistent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raymlops.errors import SnapshotError

_KEY_B = 0x5EED_0F_B0B
_MASK = (1 << 64) - 1
MANIFEST = "_manifest.json"
LEGACY_MANIFEST = "manifest.json"  # snapshots published before the manifest was underscored


def manifest_path(folder: Path) -> Path:
    """The snapshot folder's manifest (the legacy name when only that exists)."""
    current = folder / MANIFEST
    return current if current.is_file() or not (folder / LEGACY_MANIFEST).is_file() else folder / LEGACY_MANIFEST
TMP_PREFIX = ".tmp-"


def mix64(values: np.ndarray, key: int) -> np.ndarray:
    """splitmix64 of ``values ^ key``: a keyed, well-spread uint64 per element (vectorised)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) ^ np.uint64(key & _MASK)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _kind(series: pd.Series) -> str:
    dtype = series.dtype
    if isinstance(dtype, pd.ArrowDtype):
        t = dtype.pyarrow_dtype
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return "time"
        if pa.types.is_boolean(t):
            return "bool"
        return "num" if pa.types.is_integer(t) or pa.types.is_floating(t) else "text"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "time"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "num"
    inferred = pd.api.types.infer_dtype(series, skipna=True)
    return {"boolean": "bool", "integer": "num", "floating": "num", "mixed-integer-float": "num",
            "datetime": "time", "datetime64": "time", "date": "time"}.get(inferred, "text")


def canonical_column(series: pd.Series, kind: str | None = None) -> pd.Series:
    """One representation per kind of value, so numpy-, nullable- and Arrow-backed columns holding the
    same values hash alike: times -> Int64 microseconds (UTC), numbers -> float64 (integers beyond
    2**53 lose their last bits), booleans -> boolean, everything else -> text. ``kind`` should be the
    dataset's kind of the column: a batch where the column happens to be all missing cannot tell."""
    kind = kind or _kind(series)
    missing = series.isna().to_numpy()
    if kind == "time":
        when = pd.to_datetime(series, utc=True).dt.as_unit("us")
        out = pd.Series(when.array.asi8, dtype="Int64", index=series.index)
    elif kind == "num":
        out = pd.to_numeric(series, errors="coerce").astype("float64")
    elif kind == "bool":
        out = series.astype("boolean")
    else:
        out = series.astype("string").astype(object)
    if missing.any():
        out = out.astype(object).where(~missing, None) if kind == "text" else out.where(~missing)
    return out


def _canonical_frame(frame: pd.DataFrame, cols: list[str], kinds: dict[str, str] | None) -> pd.DataFrame:
    kinds = kinds or {}
    return pd.DataFrame({c: canonical_column(frame[c], kinds.get(c)) for c in cols}, index=frame.index)


def row_hashes(frame: pd.DataFrame, key: int = 0, reverse: bool = False,
               kinds: dict[str, str] | None = None) -> np.ndarray:
    """One uint64 per row over all columns in name order (the index is ignored), mixed with ``key``.

    Columns are put in a canonical form first (see ``canonical_column``); pandas' own hash_key only
    affects text columns, so the key is mixed in afterwards.
    """
    cols = sorted(frame.columns, reverse=reverse)
    raw = pd.util.hash_pandas_object(_canonical_frame(frame, cols, kinds), index=False).to_numpy(dtype=np.uint64)
    return mix64(raw, key) if key else raw


def row_hash_pair(frame: pd.DataFrame, kinds: dict[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two independent hashes per row from one canonicalisation (for the 128-bit fingerprint)."""
    cols = sorted(frame.columns)
    canonical = _canonical_frame(frame, cols, kinds)
    a = pd.util.hash_pandas_object(canonical, index=False).to_numpy(dtype=np.uint64)
    b = pd.util.hash_pandas_object(canonical[cols[::-1]], index=False).to_numpy(dtype=np.uint64)
    return a, mix64(b, _KEY_B)


def fingerprint_partial(frame: pd.DataFrame, hashes: tuple[np.ndarray, np.ndarray] | None = None,
                        kinds: dict[str, str] | None = None) -> dict[str, int]:
    """Order-independent sums of row hashes of one batch (combine with ``combine_fingerprint``)."""
    a, b = hashes if hashes is not None else row_hash_pair(frame, kinds)
    # Sums mod 2**64 of uint64 wrap around in numpy, which is what we want.
    with np.errstate(over="ignore"):
        return {"rows": len(frame), "sum_a": int(a.sum(dtype=np.uint64)), "sum_b": int(b.sum(dtype=np.uint64))}


def arrow_kinds(schema: pa.Schema) -> dict[str, str]:
    """Column -> kind (time, num, bool, text): storage details such as large_string vs string or ns vs
    us timestamps do not change a fingerprint."""
    def kind(t: pa.DataType) -> str:
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return "time"
        if pa.types.is_boolean(t):
            return "bool"
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return "num"
        return "text"
    return {name: kind(t) for name, t in zip(schema.names, schema.types)}


def combine_fingerprint(partials: list[dict[str, Any]], schema: dict[str, str]) -> str:
    """The dataset's id: 16 hex chars from the schema (column kinds), row count and summed row hashes."""
    rows = sum(p["rows"] for p in partials)
    sum_a = sum(p["sum_a"] for p in partials) & _MASK
    sum_b = sum(p["sum_b"] for p in partials) & _MASK
    payload = json.dumps({"schema": schema, "rows": rows, "a": sum_a, "b": sum_b}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SnapshotManifest:
    """What a snapshot holds and where it came from."""

    snapshot_id: str
    rows: int
    schema: dict[str, str]
    sources: list[str]
    files: list[str]
    created_at: float
    config_hash: str = ""
    validation_report: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SnapshotManifest:
        return cls(**data)


@dataclass(frozen=True)
class Snapshot:
    path: Path
    manifest: SnapshotManifest

    @property
    def snapshot_id(self) -> str:
        return self.manifest.snapshot_id


WRITER = "_writer.json"


def new_temp_dir(root: str | Path) -> Path:
    """A fresh folder under ``root`` for writing a snapshot; it records its writer so a crash is detectable."""
    path = Path(root) / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    (path / WRITER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    return path


def _writer_is_gone(tmp_dir: Path) -> bool:
    try:
        info = json.loads((tmp_dir / WRITER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


def publish_snapshot(tmp_dir: Path, manifest: SnapshotManifest) -> Snapshot:
    """Write the manifest last and rename the folder into place; an existing id is kept as it is."""
    tmp_dir = Path(tmp_dir)
    files = sorted(p.name for p in tmp_dir.iterdir() if p.suffix == ".parquet")
    if sorted(manifest.files) != files:
        raise SnapshotError(f"snapshot {manifest.snapshot_id}: manifest lists {len(manifest.files)} files but "
                            f"{tmp_dir} holds {len(files)}")
    (tmp_dir / WRITER).unlink(missing_ok=True)
    for name in files:  # the data reaches the disk before the manifest that vouches for it
        with open(tmp_dir / name, "rb") as f:
            os.fsync(f.fileno())
    manifest_tmp = tmp_dir / f".{MANIFEST}.tmp"
    manifest_tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    with open(manifest_tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(manifest_tmp, tmp_dir / MANIFEST)
    final = tmp_dir.parent / manifest.snapshot_id
    try:
        os.rename(tmp_dir, final)
    except OSError:
        if manifest_path(final).is_file():  # the same content was published before: keep that one
            shutil.rmtree(tmp_dir, ignore_errors=True)
        else:
            raise SnapshotError(f"cannot publish snapshot {manifest.snapshot_id}: {final} exists but is "
                                "incomplete; remove it and run again") from None
    return load_snapshot(final.parent, manifest.snapshot_id)


def load_snapshot(root: str | Path, snapshot_id: str) -> Snapshot:
    """A published snapshot; raises SnapshotError when absent or incomplete (missing files)."""
    path = Path(root) / snapshot_id
    mpath = manifest_path(path)
    if not mpath.is_file():
        known = ", ".join(s.snapshot_id for s in list_snapshots(root)) or "none"
        raise SnapshotError(f"no snapshot {snapshot_id!r} under {root} (published: {known})")
    manifest = SnapshotManifest.from_dict(json.loads(mpath.read_text()))
    missing = [f for f in manifest.files if not (path / f).is_file()]
    if missing:
        raise SnapshotError(f"snapshot {snapshot_id} is incomplete: {len(missing)} files missing, e.g. {missing[0]}")
    return Snapshot(path=path, manifest=manifest)


def list_snapshots(root: str | Path) -> list[Snapshot]:
    """Published snapshots, newest first; temp folders and incomplete ones are not listed."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for child in root.iterdir():
        if child.name.startswith(TMP_PREFIX) or not manifest_path(child).is_file():
            continue
        try:
            out.append(load_snapshot(root, child.name))
        except (SnapshotError, json.JSONDecodeError, TypeError):
            continue
    return sorted(out, key=lambda s: s.manifest.created_at, reverse=True)


def remove_stale_temp_dirs(root: str | Path, older_than_s: float = 24 * 3600) -> int:
    """Delete temp folders left by crashed writers: their process is gone, or they are very old."""
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    for child in root.iterdir():
        if child.name.startswith(TMP_PREFIX) and (
                _writer_is_gone(child) or time.time() - child.stat().st_mtime > older_than_s):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed
