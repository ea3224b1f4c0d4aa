from __future__ import annotations

import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.data.readers import ROW_COLUMN, SOURCE_COLUMN, expand_paths, read_file
from raymlops.errors import DataSourceError, DataValidationError


def test_csv_rows_keep_file_and_row_number(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x,y\n" + "".join(f"{i},{'bad' if i == 1234 else i * 2}\n" for i in range(1, 3001)))
    tables = list(read_file(str(path), "csv", text_columns={"y"}, batch_rows=1000))
    assert len(tables) == 3
    t = pa.concat_tables(tables)
    assert t.num_rows == 3000
    assert t.column(ROW_COLUMN).to_pylist()[1233] == 1234
    assert t.column("y").type == pa.string() and t.column("y").to_pylist()[1233] == "bad"
    assert set(t.column(SOURCE_COLUMN).to_pylist()) == {str(path)}


def test_gzip_csv_json_lines_and_parquet(tmp_path):
    with gzip.open(tmp_path / "a.csv.gz", "wt") as f:
        f.write("x,y\n1,a\n2,\n")
    t = pa.concat_tables(read_file(str(tmp_path / "a.csv.gz"), "csv"))
    assert t.column("y").to_pylist() == ["a", None]
    (tmp_path / "b.jsonl").write_text('{"x": 1, "y": "a"}\n{"x": "oops", "y": null}\n')
    t = pa.concat_tables(read_file(str(tmp_path / "b.jsonl"), "json", text_columns={"x"}))
    assert t.column("x").to_pylist() == ["1", "oops"] and t.column(ROW_COLUMN).to_pylist() == [1, 2]
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "c.parquet")
    t = pa.concat_tables(read_file(str(tmp_path / "c.parquet"), "parquet", batch_rows=2))
    assert t.column("x").to_pylist() == [1, 2, 3] and t.column(ROW_COLUMN).to_pylist() == [1, 2, 3]


def test_globs_and_directories_expand_sorted(tmp_path):
    for name in ("m2.csv", "m1.csv", "_SUCCESS", ".hidden.csv"):
        (tmp_path / name).write_text("x\n1\n")
    assert [p.split("/")[-1] for p in expand_paths(str(tmp_path / "m*.csv"))] == ["m1.csv", "m2.csv"]
    assert [p.split("/")[-1] for p in expand_paths(str(tmp_path))] == ["m1.csv", "m2.csv"]
    with pytest.raises(DataSourceError, match="no files match"):
        expand_paths(str(tmp_path / "z*.csv"))


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataSourceError, match="broken.parquet"):
        list(read_file(str(path), "parquet"))


def test_a_row_with_a_field_too_many_names_file_row_and_line(tmp_path):
    """Issue 15: the row is the data row (header excluded, as in validation reports) and the line is the
    file's, even past pyarrow's first block, where its own message has no row number."""
    small = tmp_path / "ragged.csv"
    small.write_text("a,b\n1,2\n\n3,4,5\n")
    with pytest.raises(DataValidationError) as info:
        list(read_file(str(small), "csv"))
    assert str(info.value) == f"{small} row 2 (line 4): 3 fields where the header has 2: '3,4,5'"
    lines = ["a,b", '"two\nlines",0'] + [f"{i},{i * 2}" for i in range(2, 600_001)]
    lines[450_000] += ",extra"                      # data row 450,000, past the first 4 MiB block
    with gzip.open(tmp_path / "big.csv.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as info:
        list(read_file(str(tmp_path / "big.csv.gz"), "csv", text_columns={"a"}))
    assert "big.csv.gz row 450,000 (line 450,002): 3 fields where the header has 2: '450000,900000,extra'" \
        in str(info.value)
