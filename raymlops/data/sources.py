"""Declared sources -> one Ray Dataset (files, globs, object-store URIs, SQL; unions and joins).

Files are read by Ray tasks, one per file, through ``readers.read_file`` so every row keeps its file
and row number. SQL goes through ``ray.data.read_sql`` with a DB-API connection factory (sqlite3 or
psycopg2). Joins broadcast the small right-hand table to every batch of the base table.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import ray
import ray.data

from raymlops.config import FileSourceConfig, JoinConfig, PipelineConfig, SourceConfig, SqlSourceConfig
from raymlops.data.columns import SourceColumns, file_source_columns
from raymlops.data.readers import PROVENANCE_COLUMNS, ROW_COLUMN, SOURCE_COLUMN, expand_paths, filesystem_for, read_file
from raymlops.errors import DataSourceError


def _read_uris(batch: pa.Table, *, src: FileSourceConfig, text_columns: frozenset[str]):
    for uri in batch.column("uri").to_pylist():
        yield from read_file(uri, src.type, storage_options=src.storage_options, columns=src.columns,
                             text_columns=text_columns, delimiter=src.csv.delimiter,
                             null_values=src.csv.null_values)


def read_file_source(src: FileSourceConfig, resolve: Callable[[str], str],
                     text_columns: Iterable[str] = ()) -> tuple[ray.data.Dataset, list[str]]:
    paths = [src.path] if isinstance(src.path, str) else src.path
    try:
        files = expand_paths([resolve(p) for p in paths], src.storage_options)
    except DataSourceError as exc:
        raise DataSourceError(f"source {src.name!r}: {exc}") from exc
    ds = ray.data.from_items([{"uri": f} for f in files], override_num_blocks=len(files))
    fn = partial(_read_uris, src=src, text_columns=frozenset(text_columns))
    return ds.map_batches(fn, batch_size=1, batch_format="pyarrow"), files


def _sqlite_factory(path: str) -> Callable[[], Any]:
    def connect():
        if not os.path.exists(path):
            raise DataSourceError(f"SQLite database not found: {path}")
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    return connect


def _postgres_factory(url: str, password_env: str | None) -> Callable[[], Any]:
    def connect():
        import psycopg2

        password = os.environ.get(password_env) if password_env else None
        if password_env and password is None:
            raise DataSourceError(f"environment variable {password_env} (the database password) is not set")
        return psycopg2.connect(url, **({"password": password} if password else {}))
    return connect


def _sql_provenance(batch: pa.Table, *, name: str) -> pa.Table:
    n = batch.num_rows
    batch = batch.append_column(SOURCE_COLUMN, pa.array([f"sql:{name}"] * n, pa.string()))
    return batch.append_column(ROW_COLUMN, pa.nulls(n, pa.int64()))


def _probe_sql(src: SqlSourceConfig, resolve: Callable[[str], str]) -> tuple[Callable[[], Any], str, list[str]]:
    """The connection factory, the URL to show, and the query's columns (run here for zero rows, so a bad
    query fails with its message, not a worker traceback)."""
    parsed = urlparse(src.url)
    if parsed.scheme == "sqlite":
        path = src.url[len("sqlite:///"):] if src.url.startswith("sqlite:///") else parsed.path
        factory = _sqlite_factory(resolve(path))
        shown = f"sqlite:///{resolve(path)}"
    elif parsed.scheme in ("postgresql", "postgres"):
        if parsed.password or "password=" in parsed.query.lower():  # config validation refuses both first
            raise DataSourceError(f"source {src.name!r}: the URL holds a password; set password_env instead")
        factory = _postgres_factory(src.url, src.password_env)
        shown = src.url
    else:
        raise DataSourceError(f"source {src.name!r}: unsupported SQL URL scheme {parsed.scheme!r} "
                              "(use sqlite:/// or postgresql://)")
    try:
        conn = factory()
    except DataSourceError as exc:
        raise DataSourceError(f"source {src.name!r}: {exc}") from exc
    except Exception as exc:  # sqlite3 / psycopg2 errors
        raise DataSourceError(f"source {src.name!r}: cannot connect to {shown}: {exc}") from exc
    try:
        cur = conn.cursor()
        cur.execute(f"SELECT * FROM ({src.query.strip().rstrip(';')}) AS raymlops_probe LIMIT 0")
        columns = [d[0] for d in cur.description or ()]
    except Exception as exc:
        raise DataSourceError(f"source {src.name!r}: the query failed on {shown}: {exc}".strip()) from exc
    finally:
        conn.close()
    return factory, shown, columns


def read_sql_source(src: SqlSourceConfig, resolve: Callable[[str], str]) -> tuple[ray.data.Dataset, list[str]]:
    factory, shown, _ = _probe_sql(src, resolve)
    ds = ray.data.read_sql(src.query, factory, override_num_blocks=1)  # one fetchall task; not split into 200
    return ds.map_batches(partial(_sql_provenance, name=src.name), batch_format="pyarrow"), [shown]


def source_columns(src: SourceConfig, cfg: PipelineConfig, whole: bool = False) -> SourceColumns:
    """A source's columns, read cheaply on the driver (see ``columns.data_column_problems``)."""
    if isinstance(src, SqlSourceConfig):
        return SourceColumns(tuple(_probe_sql(src, cfg.resolve_path)[2]))
    return file_source_columns(src, cfg.resolve_path, whole)


def read_source(src: SourceConfig, cfg: PipelineConfig, text_columns: Iterable[str] = ()):
    if isinstance(src, SqlSourceConfig):
        return read_sql_source(src, cfg.resolve_path)
    return read_file_source(src, cfg.resolve_path, text_columns)


def _align_keys(left: pd.DataFrame, right: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Give each key one type on both sides: a timestamp column joins an ISO-text column, ints join text."""
    for key in keys:
        if left[key].dtype == right[key].dtype:
            continue
        left, right = left.copy(), right.copy()
        if pd.api.types.is_datetime64_any_dtype(left[key]) or pd.api.types.is_datetime64_any_dtype(right[key]):
            left[key] = pd.to_datetime(left[key], utc=True, errors="coerce", format="mixed")
            right[key] = pd.to_datetime(right[key], utc=True, errors="coerce", format="mixed")
        else:
            left[key] = left[key].astype("string")
            right[key] = right[key].astype("string")
    return left, right


def broadcast_join(batch: pd.DataFrame, *, right: pd.DataFrame, join: JoinConfig) -> pd.DataFrame:
    batch, right = _align_keys(batch, right, join.keys)
    return batch.merge(right, how=join.how, on=join.keys, suffixes=("", f"_{join.right}"), sort=False)


def build_dataset(cfg: PipelineConfig, text_columns: Iterable[str] = ()) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """The base table (union of base sources) with every join applied, and what was read."""
    by_name = {s.name: s for s in cfg.data.sources}
    base_names = cfg.data.base or [cfg.data.sources[0].name]
    text_columns = set(text_columns)
    read: dict[str, list[str]] = {}
    base = None
    for name in base_names:
        ds, files = read_source(by_name[name], cfg, text_columns)
        read[name] = files
        base = ds if base is None else base.union(ds)
    info: dict[str, Any] = {"sources": read, "join_duplicates_dropped": {}}
    for join in cfg.data.joins:
        right_ds, files = read_source(by_name[join.right], cfg, text_columns)
        read[join.right] = files
        right, dropped = join_table(right_ds.to_pandas(), join)
        info["join_duplicates_dropped"][join.right] = dropped
        base = base.map_batches(partial(broadcast_join, right=right, join=join), batch_format="pandas")
    return base, info


def join_table(right: pd.DataFrame, join: JoinConfig) -> tuple[pd.DataFrame, int]:
    """The right-hand table of a join, one row per key (the first in sorted order), and how many it dropped."""
    right = right.drop(columns=list(PROVENANCE_COLUMNS), errors="ignore")
    missing = [k for k in join.keys if k not in right.columns]
    if missing:
        raise DataSourceError(f"join with {join.right!r}: key columns {missing} are not in that source")
    before = len(right)
    right = right.sort_values(list(right.columns), kind="stable").drop_duplicates(subset=join.keys, keep="first")
    return right, before - len(right)


def file_bytes(cfg: PipelineConfig) -> int | None:
    """Bytes of every file the sources name (as stored: compressed files count compressed), or None when
    a source is SQL, whose size only its query knows."""
    total = 0
    for src in cfg.data.sources:
        if not isinstance(src, FileSourceConfig):
            return None
        paths = [src.path] if isinstance(src.path, str) else src.path
        for uri in expand_paths([cfg.resolve_path(p) for p in paths], src.storage_options):
            fs, path = filesystem_for(uri, src.storage_options)
            total += max(fs.get_file_info(path).size or 0, 0)
    return total


def read_frame(src: SourceConfig, cfg: PipelineConfig,
               text_columns: Iterable[str] = ()) -> tuple[pd.DataFrame | None, list[str]]:
    """A file source read whole in this process with the very reader Ray's tasks use, and its files
    (no frame when the files hold no rows: Ray Data's path says what that means)."""
    assert isinstance(src, FileSourceConfig), "SQL sources are read by Ray Data"
    paths = [src.path] if isinstance(src.path, str) else src.path
    try:
        files = expand_paths([cfg.resolve_path(p) for p in paths], src.storage_options)
    except DataSourceError as exc:
        raise DataSourceError(f"source {src.name!r}: {exc}") from exc
    tables = [t for f in files for t in read_file(f, src.type, storage_options=src.storage_options, columns=src.columns,
                                                  text_columns=frozenset(text_columns), delimiter=src.csv.delimiter,
                                                  null_values=src.csv.null_values)]
    frames = [t.to_pandas() for t in tables]  # batch by batch, as Ray Data hands them to the batch functions
    if not frames:
        return None, files
    return (pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]), files
