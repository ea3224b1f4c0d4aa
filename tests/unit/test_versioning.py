from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from raymlops.data import versioning as v
from raymlops.errors import SnapshotError


def sample(n=200) -> pd.DataFrame:
    return pd.DataFrame({"a": range(n), "b": [f"x{i % 7}" for i in range(n)], "c": [i * 0.5 for i in range(n)]})


def fp(parts: list[pd.DataFrame]) -> str:
    return v.combine_fingerprint([v.fingerprint_partial(p) for p in parts], {"a": "int64", "b": "string", "c": "double"})


def test_fingerprint_ignores_order_and_partitioning():
    df = sample()
    one = fp([df])
    shuffled = df.sample(frac=1, random_state=3)
    assert fp([shuffled.iloc[:50], shuffled.iloc[50:120], shuffled.iloc[120:]]) == one
    assert fp([df[["c", "a", "b"]]]) == one


def test_one_changed_cell_changes_fingerprint():
    df = sample()
    changed = df.copy()
    changed.loc[123, "c"] = 61.75
    assert fp([changed]) != fp([df])
    assert fp([df.iloc[:-1]]) != fp([df])
    assert fp([pd.concat([df, df.iloc[:1]])]) != fp([df])


def _write(tmp, sid, files=("part-0.parquet",)):
    for f in files:
        (tmp / f).write_bytes(b"PAR1")
    return v.SnapshotManifest(snapshot_id=sid, rows=1, schema={"a": "int64"}, sources=["s.csv"],
                              files=list(files), created_at=time.time())


def test_temp_folder_is_never_listed_and_publish_is_atomic(tmp_path):
    tmp = v.new_temp_dir(tmp_path)
    manifest = _write(tmp, "abc")
    assert v.list_snapshots(tmp_path) == []          # a writer in progress is invisible
    snap = v.publish_snapshot(tmp, manifest)
    assert snap.path == tmp_path / "abc" and not tmp.exists()
    assert [s.snapshot_id for s in v.list_snapshots(tmp_path)] == ["abc"]
    assert json.loads((snap.path / v.MANIFEST).read_text())["snapshot_id"] == "abc"


def test_republishing_same_content_keeps_the_first(tmp_path):
    first = v.publish_snapshot(*(lambda t: (t, _write(t, "same")))(v.new_temp_dir(tmp_path)))
    created = first.manifest.created_at
    again = v.publish_snapshot(*(lambda t: (t, _write(t, "same")))(v.new_temp_dir(tmp_path)))
    assert again.manifest.created_at == created
    assert [p.name for p in tmp_path.iterdir()] == ["same"]


def test_incomplete_snapshot_is_refused(tmp_path):
    snap = v.publish_snapshot(*(lambda t: (t, _write(t, "s1", ("a.parquet", "b.parquet"))))(v.new_temp_dir(tmp_path)))
    (snap.path / "b.parquet").unlink()
    with pytest.raises(SnapshotError, match="incomplete"):
        v.load_snapshot(tmp_path, "s1")
    assert v.list_snapshots(tmp_path) == []
    with pytest.raises(SnapshotError, match="no snapshot 'zzz'"):
        v.load_snapshot(tmp_path, "zzz")


def test_manifest_must_match_files(tmp_path):
    tmp = v.new_temp_dir(tmp_path)
    manifest = _write(tmp, "m")
    (tmp / "extra.parquet").write_bytes(b"PAR1")
    with pytest.raises(SnapshotError, match="manifest lists 1 files"):
        v.publish_snapshot(tmp, manifest)


def test_row_hashes_do_not_depend_on_column_representation():
    import pyarrow as pa

    table = pa.table({
        "ts": pa.array([1_000_000, None, 3_000_000], pa.timestamp("us", tz="UTC")),
        "i": pa.array([1, None, 3], pa.int64()), "f": [1.5, None, 2.0], "s": ["a", None, "c"],
        "b": [True, None, False]})
    arrow_backed = table.to_pandas(types_mapper=pd.ArrowDtype)
    numpy_backed = table.to_pandas()                     # ints with nulls become float64 here
    numpy_backed["ts"] = numpy_backed["ts"].dt.as_unit("ns")
    assert (v.row_hashes(arrow_backed) == v.row_hashes(numpy_backed)).all()
    assert fp([arrow_backed]) == fp([numpy_backed])


def test_a_snapshot_folder_reads_as_one_table_and_older_snapshots_still_load(tmp_path):
    """Issue 15, item 7: `pd.read_parquet(snapshot folder)` failed on the manifest among the Parquet files."""
    tmp = v.new_temp_dir(tmp_path)
    df = sample()
    df.iloc[:120].to_parquet(tmp / "part-0.parquet", index=False)
    df.iloc[120:].to_parquet(tmp / "part-1.parquet", index=False)
    snap = v.publish_snapshot(tmp, v.SnapshotManifest(
        snapshot_id="tbl", rows=len(df), schema={"a": "int64"}, sources=["s.csv"],
        files=["part-0.parquet", "part-1.parquet"], created_at=time.time()))
    read = pd.read_parquet(snap.path).sort_values("a").reset_index(drop=True)
    pd.testing.assert_frame_equal(read, df)
    (snap.path / v.MANIFEST).rename(snap.path / v.LEGACY_MANIFEST)  # as published before the rename
    assert v.load_snapshot(tmp_path, "tbl").manifest.rows == len(df)
    assert [s.snapshot_id for s in v.list_snapshots(tmp_path)] == ["tbl"]
