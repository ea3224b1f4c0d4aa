"""Reading one file into Arrow tables that remember where each row came from (pure pyarrow, no Ray).

Every table a reader yields has two provenance columns, ``__source`` (the file) and ``__row`` (1-based
data row in that file, header excluded), so a validation failure can say "flights.csv row 1,234".
Columns the validation declares are read as text from CSV and JSON, so a malformed cell becomes a
reported failure instead of a reader crash. Paths may be local paths, globs or object-store URIs.
"""

from __future__ import annotations

import csv
import fnmatch
import glob as globlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raymlops.errors import DataSourceError, DataValidationError

SOURCE_COLUMN = "__source"
ROW_COLUMN = "__row"
PROVENANCE_COLUMNS = (SOURCE_COLUMN, ROW_COLUMN)
DEFAULT_BATCH_ROWS = 65_536
_GLOB_CHARS = set("*?[")
_BOOL_OPTIONS = {"anonymous", "allow_bucket_creation", "allow_bucket_deletion", "background_writes",
                 "force_virtual_addressing", "allow_delayed_open", "check_directory_existence_before_creation"}
_FLOAT_OPTIONS = {"connect_timeout", "request_timeout", "load_frequency"}


def _typed_options(opts: dict[str, str]) -> dict[str, object]:
    """Config values are text; pyarrow wants booleans and numbers for some options."""
    out: dict[str, object] = {}
    for k, v in opts.items():
        if k in _BOOL_OPTIONS:
            out[k] = str(v).strip().lower() in ("true", "1", "yes")
        elif k in _FLOAT_OPTIONS:
            out[k] = float(v)
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class FileRef:
    """One file to read: its URI-or-path as users know it, and the filesystem options to open it."""

    uri: str
    storage_options: tuple[tuple[str, str], ...] = ()


def filesystem_for(uri: str, storage_options: dict[str, str] | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path for a local path or a URI (s3://, gs://, file://)."""
    opts = dict(storage_options or {})
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    scheme, rest = uri.split("://", 1)
    try:
        if scheme == "s3" and opts:
            return pafs.S3FileSystem(**_typed_options(opts)), rest
        if scheme in ("gs", "gcs") and opts:
            return pafs.GcsFileSystem(**_typed_options(opts)), rest
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataSourceError(f"cannot open filesystem for {uri!r}: {exc}") from exc


def _join_uri(uri: str, fs_path: str) -> str:
    if "://" not in uri:
        return fs_path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{fs_path}"


def expand_paths(patterns: str | Sequence[str], storage_options: dict[str, str] | None = None) -> list[str]:
    """Expand paths and globs into a sorted list of files; a pattern matching nothing is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    out: list[str] = []
    for pattern in patterns:
        if "://" not in pattern:
            if _GLOB_CHARS & set(pattern):
                matches = sorted(p for p in globlib.glob(pattern, recursive=True) if os.path.isfile(p))
            elif os.path.isdir(pattern):
                matches = sorted(
                    os.path.join(root, f) for root, _, files in os.walk(pattern) for f in files
                    if not f.startswith((".", "_"))
                )
            else:
                matches = [pattern] if os.path.isfile(pattern) else []
        else:
            matches = _expand_remote(pattern, storage_options)
        if not matches:
            raise DataSourceError(f"no files match {pattern!r} (check the path; relative paths are resolved "
                                  "against the config file's folder)")
        out.extend(matches)
    return out


def _expand_remote(pattern: str, storage_options: dict[str, str] | None) -> list[str]:
    fs, path = filesystem_for(pattern, storage_options)
    try:
        if not (_GLOB_CHARS & set(path)):
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.File:
                return [pattern]
            if info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
                return sorted(_join_uri(pattern, i.path) for i in infos if i.type == pafs.FileType.File
                              and not os.path.basename(i.path).startswith((".", "_")))
            return []
        prefix = path[: min(path.index(c) for c in _GLOB_CHARS if c in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(_join_uri(pattern, i.path) for i in infos
                      if i.type == pafs.FileType.File and fnmatch.fnmatchcase(i.path, path))
    except (OSError, pa.ArrowException) as exc:
        raise DataSourceError(f"cannot list {pattern!r}: {exc}") from exc


def _with_provenance(table: pa.Table, uri: str, first_row: int) -> pa.Table:
    n = table.num_rows
    table = table.append_column(SOURCE_COLUMN, pa.array([uri] * n, pa.string()))
    return table.append_column(ROW_COLUMN, pa.array(range(first_row, first_row + n), pa.int64()))


def read_file(
    uri: str,
    fmt: str,
    *,
    storage_options: dict[str, str] | None = None,
    columns: Sequence[str] | None = None,
    text_columns: Iterable[str] = (),
    delimiter: str = ",",
    null_values: Sequence[str] = ("",),
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.Table]:
    """Yield tables of at most ``batch_rows`` rows with provenance columns; errors name the file."""
    fs, path = filesystem_for(uri, storage_options)
    text_columns = set(text_columns)
    row = 1
    try:
        for table in _read_tables(fs, path, fmt, columns, text_columns, delimiter, null_values, batch_rows):
            yield _with_provenance(table, uri, row)
            row += table.num_rows
    except (DataSourceError, DataValidationError):
        raise
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError) as exc:
        if fmt == "csv" and "CSV parse error" in str(exc):
            raise _malformed_row(fs, path, uri, delimiter) or DataSourceError(
                f"cannot read {uri} as csv (at or after data row {row:,}): {exc}") from None
        raise DataSourceError(f"cannot read {uri} as {fmt} (near data row {row:,}): {exc}") from exc


def _malformed_row(fs: pafs.FileSystem, path: str, uri: str, delimiter: str) -> DataValidationError | None:
    """The first row whose field count differs from the header's, found by reading the file again with
    Python's csv module: pyarrow's message has the row number only when it is in the first block."""
    try:
        with fs.open_input_stream(path) as stream:
            rows = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""), delimiter=delimiter)
            header = next(rows, [])
            data_row = 0
            for fields in rows:
                if not fields:  # pyarrow skips empty lines too, so they are not data rows
                    continue
                data_row += 1
                if len(fields) != len(header):
                    text = delimiter.join(fields)
                    shown = text if len(text) <= 120 else text[:117] + "..."
                    return DataValidationError(
                        f"{uri} row {data_row:,} (line {rows.line_num:,}): {len(fields)} fields where the header "
                        f"has {len(header)}: {shown!r}", file=uri, row=data_row, line=rows.line_num)
    except (csv.Error, OSError, UnicodeDecodeError, pa.ArrowException):
        return None
    return None


def peek_columns(uri: str, fmt: str, *, storage_options: dict[str, str] | None = None, delimiter: str = ",",
                 json_rows: int | None = 1000) -> tuple[list[str], bool]:
    """A file's column names, read cheaply: a CSV's header, a Parquet footer, the keys of the first
    ``json_rows`` JSON lines (None: all). Also whether that is all of them (False: JSON rows left unread)."""
    fs, path = filesystem_for(uri, storage_options)
    try:
        if fmt == "csv":
            with fs.open_input_stream(path) as stream:
                text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
                return next(csv.reader(text, delimiter=delimiter), []), True
        if fmt == "parquet":
            with fs.open_input_file(path) as f:
                return list(pq.ParquetFile(f).schema_arrow.names), True
        if fmt == "json":
            keys: dict[str, None] = {}
            with fs.open_input_stream(path) as stream:
                for i, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8")):
                    if json_rows is not None and i >= json_rows:
                        return list(keys), False
                    if line.strip():
                        row = json.loads(line)
                        keys.update(dict.fromkeys(row if isinstance(row, dict) else ()))
            return list(keys), True
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataSourceError(f"cannot read the columns of {uri} as {fmt}: {exc}") from exc
    raise DataSourceError(f"unknown file format {fmt!r}; use csv, parquet or json")


def _read_tables(fs, path, fmt, columns, text_columns, delimiter, null_values, batch_rows) -> Iterator[pa.Table]:
    if fmt == "csv":
        stream = fs.open_input_stream(path)  # compression detected from the extension (.gz, .bz2, ...)
        with stream:
            header = pacsv.open_csv(stream, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                                    read_options=pacsv.ReadOptions(block_size=1 << 20))
            names = header.schema.names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise DataSourceError(f"{path}: the header names column(s) {twice} more than once; rename them")
        with fs.open_input_stream(path) as stream:
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=4 << 20),
                parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in names if c in text_columns},
                    null_values=list(null_values),
                    strings_can_be_null=True,
                    include_columns=list(columns) if columns else None,
                ),
            )
            for batch in reader:
                yield from _chunks(pa.Table.from_batches([batch]), batch_rows)
    elif fmt == "parquet":
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
                yield pa.Table.from_batches([batch])
    elif fmt == "json":
        with fs.open_input_stream(path) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8")
            for chunk in pd.read_json(text, lines=True, dtype=False, chunksize=batch_rows):
                if columns:
                    chunk = chunk[[c for c in columns if c in chunk.columns]]
                for col in chunk.columns:
                    if col in text_columns or chunk[col].dtype == object:
                        chunk[col] = chunk[col].map(lambda v: None if v is None or v != v else str(v))
                yield pa.Table.from_pandas(chunk, preserve_index=False)
    else:  # the config schema admits nothing else
        raise DataSourceError(f"unknown file format {fmt!r}; use csv, parquet or json")


def _chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)
