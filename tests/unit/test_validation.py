from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raymlops.config import ValidationConfig
from raymlops.data.readers import ROW_COLUMN, SOURCE_COLUMN
from raymlops.data.validation import check_batch, coerce_frame, merge_partials

CFG = ValidationConfig.model_validate({
    "row_count": {"min": 5},
    "columns": {
        "id": {"type": "int", "nullable": False, "unique": True},
        "distance": {"type": "float", "min": 0, "max": 5000},
        "carrier": {"type": "string", "allowed": ["AA", "UA"]},
        "temp": {"type": "float", "max_null_fraction": 0.25},
        "when": {"type": "timestamp", "min": "2013-01-01", "max": "2014-01-01"},
        "ok": {"type": "bool"},
    },
})


def frame(n: int, start_row: int = 1, source: str = "data/f.csv") -> pd.DataFrame:
    return pd.DataFrame({
        "id": [str(i) for i in range(start_row, start_row + n)],
        "distance": ["100.5"] * n,
        "carrier": ["AA", "UA"] * (n // 2) + ["AA"] * (n % 2),
        "temp": ["50"] * n,
        "when": ["2013-05-01T10:00:00Z"] * n,
        "ok": ["true", "False"] * (n // 2) + ["1"] * (n % 2),
        SOURCE_COLUMN: [source] * n,
        ROW_COLUMN: list(range(start_row, start_row + n)),
    })


def test_clean_data_passes_every_check():
    report = merge_partials([check_batch(frame(10), CFG)], CFG)
    assert report.passed, report.summary()
    assert report.rows == 10
    checks = {(c.column, c.check) for c in report.checks}
    assert ("id", "unique") in checks and (None, "row_count") in checks and ("carrier", "allowed") in checks


def test_failures_name_column_check_file_and_row():
    df = frame(2000)
    df.loc[1233, "distance"] = "far"            # data row 1,234: wrong type
    df.loc[99, "distance"] = "9000"             # out of range
    df.loc[500, "carrier"] = "ZZ"               # unknown category
    report = merge_partials([check_batch(df, CFG)], CFG)
    assert not report.passed
    failed = {(c.column, c.check): c for c in report.failed_checks()}
    assert set(failed) == {("distance", "type"), ("distance", "range"), ("carrier", "allowed")}
    ex = failed[("distance", "type")].examples[0]
    assert ex["row"] == 1234 and ex["source"] == "data/f.csv" and ex["value"] == "far"
    assert ex["record"]["carrier"] in ("AA", "UA")
    assert failed[("distance", "range")].examples[0]["row"] == 100
    assert failed[("carrier", "allowed")].examples[0]["value"] == "ZZ"
    summary = report.summary()
    assert "f.csv row 1,234" in summary and "distance: type" in summary
    json.dumps(report.to_dict())


def test_report_does_not_depend_on_batch_boundaries():
    df = frame(300)
    df.loc[[5, 77, 150, 299], "carrier"] = "XX"
    whole = merge_partials([check_batch(df, CFG)], CFG).to_dict()
    parts = [check_batch(df.iloc[i:i + 37], CFG) for i in range(0, 300, 37)]
    split = merge_partials(list(reversed(parts)), CFG).to_dict()
    assert whole == split


def test_uniqueness_is_checked_across_batches():
    a, b = frame(10, start_row=1), frame(10, start_row=6, source="data/g.csv")
    report = merge_partials([check_batch(a, CFG), check_batch(b, CFG)], CFG)
    unique = next(c for c in report.checks if c.check == "unique")
    assert not unique.passed and unique.failures == 5
    assert {e["source"] for e in unique.examples} <= {"data/f.csv", "data/g.csv"}


def test_null_fraction_row_count_and_missing_column():
    df = frame(4)
    df.loc[[0, 1], "temp"] = None
    df = df.drop(columns=["ok"])
    report = merge_partials([check_batch(df, CFG)], CFG)
    failed = {(c.column, c.check) for c in report.failed_checks()}
    assert failed == {("temp", "max_null_fraction"), (None, "row_count"), ("ok", "present")}


def test_not_null_and_bad_timestamp():
    df = frame(6)
    df.loc[2, "id"] = None
    df.loc[3, "when"] = "2020-01-01T00:00:00Z"
    df.loc[4, "when"] = "yesterday"
    report = merge_partials([check_batch(df, CFG)], CFG)
    failed = {(c.column, c.check): c for c in report.failed_checks()}
    assert failed[("id", "not_null")].examples[0]["row"] == 3
    assert failed[("when", "range")].examples[0]["row"] == 4
    assert failed[("when", "type")].examples[0]["value"] == "yesterday"


def test_coerce_gives_declared_types():
    out = coerce_frame(frame(4), CFG)
    assert str(out["id"].dtype) == "Int64"
    assert out["distance"].dtype == np.float64
    assert str(out["when"].dtype).startswith("datetime64") and str(out["when"].dt.tz) == "UTC"
    assert out["ok"].tolist() == [True, False, True, False]


@pytest.mark.parametrize("bad", ["", "  ", "1e999999", "NaN"])
def test_odd_numeric_text_never_crashes(bad):
    df = frame(3)
    df.loc[1, "distance"] = bad
    report = merge_partials([check_batch(df, CFG)], CFG)
    assert report.rows == 3
