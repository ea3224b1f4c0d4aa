"""The config against the data's columns (issue 15): every named column exists after unions and joins."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config import config_error, parse_config
from raymlops.data.columns import (SourceColumns, check_columns, data_column_problems, file_source_columns,
                                   local_data_column_problems)
from raymlops.data.readers import peek_columns
from tests.helpers import smoke_dict

FLIGHTS = ("year", "month", "day", "hour", "carrier", "origin", "dest", "distance", "time_hour", "arr_delay",
           "delayed")
WEATHER = ("origin", "time_hour", "temp", "wind_speed", "precip", "visib", "year")


def _cfg(**changes):
    data = smoke_dict()
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return parse_config(data)


def _problems(cfg, flights=FLIGHTS, weather=WEATHER):
    return check_columns(cfg, {"flights": SourceColumns(flights), "weather": SourceColumns(weather)})


def test_the_smoke_config_matches_its_columns():
    assert _problems(_cfg()) == []


@pytest.mark.parametrize(("changes", "path", "says"), [
    ({"features.target": "delayd"}, "features.target",
     "no column 'delayd' in the data (flights joined with weather); did you mean 'delayed'"),
    ({"features.numeric": [{"column": "tmp"}]}, "features.numeric[0].column", "did you mean 'temp'?"),
    ({"features.categorical": [{"column": "Carrier"}]}, "features.categorical[0].column", "did you mean 'carrier'"),
    ({"features.derived": [{"name": "dow", "source": "time_hr", "kind": "day_of_week"}]},
     "features.derived[0].source", "did you mean 'time_hour'"),
    ({"data.split.column": "timehour"}, "data.split.column", "did you mean 'time_hour'"),
    ({"data.joins": [{"right": "weather", "keys": ["origin", "time"]}]}, "data.joins[0].keys",
     "no key column 'time' in flights"),
    ({"evaluation.slices": ["zzz"]}, "evaluation.slices[0]", "the columns are: year, month, day, hour, carrier"),
    ({"features.target": "arr_delay"}, "features.target", "'arr_delay' is removed by data.cleaning.drop_columns"),
    ({"features.weight_column": "wieght"}, "features.weight_column", "no column 'wieght' in the data"),
])
def test_a_column_the_data_lacks_is_named_with_the_closest_names(changes, path, says):
    problems = _problems(_cfg(**changes))
    assert any(p == path and says in text for p, text in problems), problems


def test_joined_columns_count_and_clashing_names_get_the_join_suffix():
    """`year` is in both tables: the weather's becomes year_weather, as pandas' merge names it."""
    cfg = _cfg(**{"features.numeric": [{"column": "temp"}, {"column": "year_weather"}]})
    assert _problems(cfg) == []
    assert _problems(cfg, weather=tuple(c for c in WEATHER if c != "year"))[0][0] == "features.numeric[1].column"


def test_columns_are_read_cheaply_from_csv_parquet_and_json_lines(tmp_path):
    (tmp_path / "a.csv").write_text("\ufeffx;y\n1;2\n")
    assert peek_columns(str(tmp_path / "a.csv"), "csv", delimiter=";") == (["x", "y"], True)
    pq.write_table(pa.table({"p": [1], "q": ["a"]}), tmp_path / "b.parquet")
    assert peek_columns(str(tmp_path / "b.parquet"), "parquet") == (["p", "q"], True)
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"k": i} if i < 5 else {"k": i, "late": 1}) + "\n"
                                              for i in range(10)))
    assert peek_columns(str(tmp_path / "c.jsonl"), "json", json_rows=3) == (["k"], False)
    assert peek_columns(str(tmp_path / "c.jsonl"), "json", json_rows=None) == (["k", "late"], True)


def test_a_json_key_beyond_the_first_rows_is_looked_for_before_it_is_reported(tmp_path):
    rows = [{"a": i, "y": i % 2} for i in range(1500)] + [{"a": 0, "y": 1, "late": 2.0}]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config({"name": "j", "data": {"sources": [{"name": "f", "type": "json", "path": str(tmp_path / "f.jsonl")}]},
                        "features": {"target": "y", "numeric": [{"column": "late"}]}})
    reads = []

    def columns_of(src, whole):
        reads.append(whole)
        return file_source_columns(src, cfg.resolve_path, whole)

    assert data_column_problems(cfg, columns_of) == [] and reads == [False, True]
    bad = cfg.model_copy(update={"features": cfg.features.model_copy(update={"target": "yy"})})
    assert data_column_problems(bad, columns_of)[0][0] == "features.target"


def test_a_selected_column_missing_from_the_file_is_named(tmp_path):
    (tmp_path / "f.csv").write_text("a,b,y\n1,2,0\n")
    cfg = parse_config({"name": "c", "data": {"sources": [{"name": "f", "type": "csv", "path": str(tmp_path / "f.csv"),
                                                           "columns": ["a", "bb", "y"]}]},
                        "features": {"target": "y", "numeric": [{"column": "b"}]}})
    problems, skipped = local_data_column_problems(cfg)
    assert skipped is None
    assert ("data.sources[0].columns", "no column 'bb' in source 'f'; did you mean 'b'?") in problems
    assert any(p == "features.numeric[0].column" for p, _ in problems)  # b is not selected


def test_validate_config_skips_what_is_not_local_and_says_why(tmp_path):
    cfg = _cfg(**{"data.sources.0.path": "s3://bucket/flights/*.csv"})
    assert local_data_column_problems(cfg) == ([], "source 'flights' is not on this machine (s3://bucket/flights/*.csv)")
    problems, skipped = local_data_column_problems(_cfg(**{"data.sources.0.path": str(tmp_path / "none*.csv")}))
    assert problems == [] and "no files match" in skipped


def test_problems_found_after_loading_name_file_and_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: x\nfeatures:\n  target: delayd\n")
    err = config_error([("features.target", "no column 'delayd'")], "against its data", path)
    assert err.problems == [f"{path}:3: features.target: no column 'delayd'"]
    assert str(err).startswith(f"1 problem in {path} against its data:\n")
