"""The config against the data's columns, before any data is read (pure: no Ray).

Every column the config names (the target, features, derived sources, the time split, join keys, slices)
must exist once the sources are unioned and joined. Each source's columns come cheaply (a CSV header, a
Parquet footer, the keys of the first JSON lines, a SQL query run for zero rows), and ``check_columns``
follows the union, the joins and the cleaning as the data stage does. So a typo fails at once, naming
the column and the closest existing names, instead of as a KeyError in a Ray task a minute later.

Example::

    problems = data_column_problems(cfg, lambda src, whole: file_source_columns(src, cfg.resolve_path, whole))
    # [("features.target", "no column 'delayd' in the data (flights joined with weather); did you mean 'delayed'?")]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from raymlops.config import FileSourceConfig, PipelineConfig, SourceConfig, closest_names, did_you_mean
from raymlops.data.readers import expand_paths, peek_columns
from raymlops.errors import DataSourceError

SHOWN_COLUMNS = 12


@dataclass(frozen=True)
class SourceColumns:
    """The columns a source gives; ``complete`` is False when only its first JSON lines were read."""

    columns: tuple[str, ...]
    complete: bool = True
    header: tuple[str, ...] | None = None  # a file source's own columns, before its `columns:` selection


def file_source_columns(src: FileSourceConfig, resolve: Callable[[str], str], whole: bool = False) -> SourceColumns:
    """Every file's columns (a column in any file counts), then the source's `columns:` selection."""
    paths = [src.path] if isinstance(src.path, str) else src.path
    try:
        files = expand_paths([resolve(p) for p in paths], src.storage_options)
        seen: dict[str, None] = {}
        complete = True
        for f in files:
            names, all_of_them = peek_columns(f, src.type, storage_options=src.storage_options,
                                              delimiter=src.csv.delimiter, json_rows=None if whole else 1000)
            seen.update(dict.fromkeys(names))
            complete = complete and all_of_them
    except DataSourceError as exc:
        raise DataSourceError(f"source {src.name!r}: {exc}") from exc
    header = tuple(seen)
    columns = tuple(c for c in src.columns if c in seen) if src.columns else header
    return SourceColumns(columns, complete, header)


def _missing(kind: str, name: str, have: list[str], where: str) -> str:
    hint = did_you_mean(closest_names(name, have))
    if not hint:
        shown = ", ".join(have[:SHOWN_COLUMNS]) + (f", ... ({len(have)} in all)" if len(have) > SHOWN_COLUMNS else "")
        hint = f"the columns are: {shown}"
    return f"no {kind} {name!r} in {where}; {hint}"


def check_columns(cfg: PipelineConfig, by_source: dict[str, SourceColumns]) -> list[tuple[str, str]]:
    """(yaml path, problem) for each column the config names that the data will not have."""
    problems: list[tuple[str, str]] = []
    sources = {s.name: (i, s) for i, s in enumerate(cfg.data.sources)}
    for name, cols in by_source.items():
        i, src = sources[name]
        if isinstance(src, FileSourceConfig) and src.columns and cols.header is not None:
            for c in src.columns:
                if c not in cols.header:
                    problems.append((f"data.sources[{i}].columns",
                                     _missing("column", c, list(cols.header), f"source {name!r}")))
    base_names = cfg.data.base or [cfg.data.sources[0].name]
    have: dict[str, None] = {}
    for name in base_names:
        have.update(dict.fromkeys(by_source[name].columns))
    where = " + ".join(base_names)
    for j, join in enumerate(cfg.data.joins):
        right = by_source[join.right].columns
        for key in join.keys:
            if key not in have:
                problems.append((f"data.joins[{j}].keys", _missing("key column", key, list(have), where)))
            if key not in right:
                problems.append((f"data.joins[{j}].keys", _missing("key column", key, list(right),
                                                                    f"source {join.right!r}")))
        for c in right:  # as the join does: the right side's clashing names get a suffix
            if c not in join.keys:
                have[f"{c}_{join.right}" if c in have else c] = None
        where += f" joined with {join.right}"
    where = f"the data ({where})"
    dropped = set(cfg.data.cleaning.drop_columns)
    kept = [c for c in have if c not in dropped]

    def need(path: str, column: str, available: list[str], kind: str = "column") -> None:
        if column in available:
            return
        if column in dropped and column in have:
            problems.append((path, f"{kind} {column!r} is removed by data.cleaning.drop_columns"))
        else:
            problems.append((path, _missing(kind, column, available, where)))

    f = cfg.features
    need("features.target", f.target, kept)
    if f.weight_column is not None:
        need("features.weight_column", f.weight_column, kept)
    if getattr(cfg.data.split, "type", None) == "time":
        need("data.split.column", cfg.data.split.column, kept)
    derived: list[str] = []
    for i, d in enumerate(f.derived):
        need(f"features.derived[{i}].source", d.source, kept + derived)
        derived.append(d.name)
    for kind, items in (("numeric", f.numeric), ("categorical", f.categorical)):
        for i, item in enumerate(items):
            need(f"features.{kind}[{i}].column", item.column, kept + derived)
    for i, s in enumerate(cfg.evaluation.slices):
        need(f"evaluation.slices[{i}]", s, kept + derived)
    return problems


def data_column_problems(cfg: PipelineConfig, columns_of: Callable[[SourceConfig, bool], SourceColumns]
                         ) -> list[tuple[str, str]]:
    """Check the sources the pipeline reads; ``columns_of(src, whole)`` reads one source's columns. A column
    not among the first JSON lines read is looked for in all of them before it is reported."""
    by_name = {s.name: s for s in cfg.data.sources}
    by_source = {name: columns_of(by_name[name], False) for name in _used_sources(cfg)}
    problems = check_columns(cfg, by_source)
    if problems and not all(c.complete for c in by_source.values()):
        by_source = {n: c if c.complete else columns_of(by_name[n], True) for n, c in by_source.items()}
        problems = check_columns(cfg, by_source)
    return problems


def _used_sources(cfg: PipelineConfig) -> list[str]:
    return list(dict.fromkeys([*(cfg.data.base or [cfg.data.sources[0].name]), *(j.right for j in cfg.data.joins)]))


def local_data_column_problems(cfg: PipelineConfig) -> tuple[list[tuple[str, str]], str | None]:
    """The check for `raymlops validate-config`, when every source read is local files: (problems, None);
    otherwise ([], why it was not done), since checking a config should need no database or credentials."""
    by_name = {s.name: s for s in cfg.data.sources}
    for name in _used_sources(cfg):
        src = by_name[name]
        if not isinstance(src, FileSourceConfig):
            return [], f"source {name!r} is a SQL query"
        remote = [p for p in ([src.path] if isinstance(src.path, str) else src.path)
                  if "://" in p and not p.startswith("file://")]
        if remote:
            return [], f"source {name!r} is not on this machine ({remote[0]})"
    try:
        return data_column_problems(cfg, lambda src, whole: file_source_columns(src, cfg.resolve_path, whole)), None
    except DataSourceError as exc:
        return [], str(exc)
