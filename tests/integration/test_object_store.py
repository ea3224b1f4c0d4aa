"""File sources on an object store: moto's S3 server on 127.0.0.1, read through pyarrow's S3FileSystem.

The smoke flights are uploaded as two objects and read with a glob; the weather is one object. Every
test gets its own bucket, so tests do not see each other's objects.
"""

from __future__ import annotations

import json

import pytest

from raymlops.config import load_config
from raymlops.data.stage import run_data_stage
from raymlops.errors import DataSourceError, DataValidationError
from tests.helpers import SMOKE_FLIGHTS, SMOKE_WEATHER, smoke_config, smoke_dict, write_config

pytestmark = pytest.mark.integration

SPLIT_AT = 1500  # data rows in part-1.csv; part-2.csv holds the other 1,500


def _flight_parts() -> tuple[str, list[str], list[str]]:
    lines = SMOKE_FLIGHTS.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    assert len(rows) == 3000
    return header, rows[:SPLIT_AT], rows[SPLIT_AT:]


def _upload_smoke(s3, bucket: str, *, part2_rows: list[str] | None = None) -> None:
    header, part1, part2 = _flight_parts()
    client = s3.client()
    client.put_object(Bucket=bucket, Key="flights/part-1.csv", Body="\n".join([header, *part1]) + "\n")
    client.put_object(Bucket=bucket, Key="flights/part-2.csv",
                      Body="\n".join([header, *(part2 if part2_rows is None else part2_rows)]) + "\n")
    client.put_object(Bucket=bucket, Key="weather.csv", Body=SMOKE_WEATHER.read_bytes())
    client.put_object(Bucket=bucket, Key="elsewhere/unrelated.csv", Body=b"a,b\n1,2\n")  # not matched by the glob


def _s3_config(tmp_path, s3, bucket: str, flights_path: str | None = None):
    data = smoke_dict()
    flights, weather = data["data"]["sources"]
    assert (flights["name"], weather["name"]) == ("flights", "weather")
    opts = s3.storage_options()
    flights.update(path=flights_path or f"s3://{bucket}/flights/*.csv", storage_options=opts)
    weather.update(path=f"s3://{bucket}/weather.csv", storage_options=opts)
    return load_config(write_config(tmp_path, data))


def test_smoke_pipeline_reads_globbed_objects_from_s3(s3_server, ray_session, tmp_path):
    (tmp_path / "s3").mkdir()
    (tmp_path / "local").mkdir()
    bucket = s3_server.new_bucket()
    _upload_smoke(s3_server, bucket)
    result = run_data_stage(_s3_config(tmp_path / "s3", s3_server, bucket))

    assert result.report.passed, result.report.summary()
    assert result.report.rows == 3000
    manifest = result.snapshot.manifest
    assert manifest.rows == 3000
    assert sum(result.split_rows.values()) == 3000
    assert manifest.sources == sorted([f"s3://{bucket}/flights/part-1.csv", f"s3://{bucket}/flights/part-2.csv",
                                       f"s3://{bucket}/weather.csv"])
    assert manifest.extra["join_duplicates_dropped"] == {"weather": 0}

    # The same rows read from the local CSV give the same content fingerprint: splitting the file in two
    # and moving it to an object store changes nothing about the snapshot.
    local = run_data_stage(load_config(smoke_config(tmp_path / "local")))
    assert local.snapshot.manifest.schema == manifest.schema
    assert local.snapshot.snapshot_id == result.snapshot.snapshot_id


def test_validation_failure_names_the_s3_object_and_row(s3_server, ray_session, tmp_path):
    bucket = s3_server.new_bucket()
    _, _, part2 = _flight_parts()
    bad_row = 7  # 1-based data row of part-2.csv (header excluded)
    cells = part2[bad_row - 1].split(",")
    assert cells[1] in {str(m) for m in range(1, 13)}  # the month column
    cells[1] = "thirteen"
    part2 = [*part2[: bad_row - 1], ",".join(cells), *part2[bad_row:]]
    _upload_smoke(s3_server, bucket, part2_rows=part2)

    with pytest.raises(DataValidationError) as info:
        run_data_stage(_s3_config(tmp_path, s3_server, bucket))
    assert f"part-2.csv row {bad_row}" in str(info.value)
    assert "thirteen" in str(info.value)

    report = json.loads(open(info.value.report_path).read())
    assert report["passed"] is False
    failed = [c for c in report["checks"] if not c["passed"]]
    assert [(c["column"], c["check"]) for c in failed] == [("month", "type")]
    example = failed[0]["examples"][0]
    assert example["source"] == f"s3://{bucket}/flights/part-2.csv"
    assert example["row"] == bad_row
    assert example["value"] == "thirteen"
    assert not list((tmp_path / "work" / "snapshots").glob("[!.]*"))  # nothing published


@pytest.mark.parametrize("flights_path", [
    "s3://{bucket}/flights/*.parquet",                    # a glob matching no object
    "s3://{bucket}/flights/part-3.csv",                   # a missing object
    "s3://raymlops-no-such-bucket/flights/*.csv",         # a glob in a missing bucket
])
def test_unreadable_s3_path_is_a_data_source_error_naming_it(s3_server, ray_session, tmp_path, flights_path):
    bucket = s3_server.new_bucket()
    _upload_smoke(s3_server, bucket)
    uri = flights_path.format(bucket=bucket)
    with pytest.raises(DataSourceError) as info:
        run_data_stage(_s3_config(tmp_path, s3_server, bucket, flights_path=uri))
    assert "'flights'" in str(info.value) and uri in str(info.value)
