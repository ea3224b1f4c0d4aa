"""Guarantee 4 (files): hostile configs and CSV files get a clear raymlops error, never a crash.

Property-based (hypothesis), thousands of cases, no Ray: the config loader on arbitrary text and on the
smoke config with any key set to any value; CSV ingestion and validation on arbitrary bytes and on
ragged, quoted, mistyped tables. Every rejection must be a ConfigError / DataSourceError (or, for a row
with a field too many or too few, a DataValidationError) whose message names the file (and, for configs,
the key path).
"""

from __future__ import annotations

import json
import copy
import io
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlops.config import load_config, parse_config
from raymlops.data.readers import read_file
from raymlops.data.validation import check_batch
from raymlops.errors import ConfigError, DataSourceError, DataValidationError
from tests.helpers import smoke_dict

pytestmark = pytest.mark.reliability
SMOKE = smoke_dict()
CASES = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
COUNTS = {"config_text": 0, "config_value": 0, "csv": 0}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) |
    st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)


def _paths(node, prefix=()):
    """Every key path of the smoke config (mappings and list items)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(SMOKE) if p]


def _set(data, path, value):
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@CASES
@given(text=st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_any_text_as_a_config_file_loads_or_raises_config_error_naming_the_file(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    COUNTS["config_text"] += 1
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@CASES
@given(path=st.sampled_from(PATHS), value=json_values)
def test_any_key_set_to_any_value_is_accepted_or_reported_at_its_path(path, value):
    data = copy.deepcopy(SMOKE)
    _set(data, path, value)
    COUNTS["config_value"] += 1
    try:
        parse_config(data, source="hostile.yaml")
    except ConfigError as exc:
        assert exc.problems and all(p.startswith("hostile.yaml") for p in exc.problems)
        text = str(exc)
        assert str(path[0]) in text or "must be a YAML mapping" in text, text


cells = st.one_of(st.text(max_size=12), st.integers().map(str), st.floats().map(str), st.just(""),
                  st.sampled_from(['"', '""', ",", "\n", "\r\n", "nan", "NULL", "2013-01-01 05:00:00",
                                   "\ufeff", "\x00", "1e309", "-0", "JFK"]))
COLUMNS = ["month", "day", "hour", "carrier", "origin", "dest", "distance", "time_hour", "delayed"]


@st.composite
def csv_files(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=600))
    header = draw(st.lists(st.sampled_from(COLUMNS + ["", "x", "month"]), min_size=1, max_size=10))
    rows = draw(st.lists(st.lists(cells, max_size=len(header) + 2), max_size=20))
    out = io.StringIO()
    out.write(",".join(header) + "\n")
    for row in rows:
        out.write(",".join(row) + "\n")
    return out.getvalue().encode("utf-8", errors="surrogatepass")


@CASES
@given(content=csv_files())
def test_any_csv_is_ingested_and_validated_or_refused_naming_the_file(content, tmp_path_factory):
    path: Path = tmp_path_factory.mktemp("csv") / "flights.csv"
    path.write_bytes(content)
    COUNTS["csv"] += 1
    try:
        tables = list(read_file(str(path), "csv", text_columns=["carrier", "origin", "dest"]))
    except (DataSourceError, DataValidationError) as exc:
        assert str(path) in str(exc)
        return
    frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True) if tables else pd.DataFrame()
    validation = parse_config(SMOKE).validation
    report = check_batch(frame, validation)
    assert report["rows"] == len(frame)
    assert report["present"] == [c for c in validation.columns if c in frame.columns]
    for key, failure in report["failures"].items():  # every failure names a checked column, a row and a count
        column = key.split("\x00")[0]
        assert column in validation.columns and failure["count"] >= len(failure["examples"]) >= 1
    json.dumps(report)  # the partial is JSON, as the stage's reports need


def test_zz_report_case_counts():
    print(f"\nhostile inputs: {COUNTS['config_text']} config texts, {COUNTS['config_value']} config values, "
          f"{COUNTS['csv']} CSV files; every one accepted or refused with a named error")
    assert any(COUNTS.values()) and all(n == 0 or n >= 1000 for n in COUNTS.values())  # 0: not selected
