"""Baseline of benchmarks/data_bench.py: raymlops' data stage done by hand in one process with pandas.

The same work through the same pure functions: ``readers.read_file`` for every file, a broadcast left
join of each joined source (de-duplicated on its keys first, as raymlops does), ``check_batch`` on the
whole frame + ``merge_partials``, ``coerce_frame``, dropping the provenance and ``drop_columns`` columns,
``drop_duplicates``, the content fingerprint, the snapshot written as Parquet and read back,
``assign_splits``, ``fit_partial`` / ``fit_features`` on the train rows and ``transform_frame`` on every
split. Frames keep pandas' usual numpy-backed dtypes (Ray Data hands raymlops Arrow-backed ones).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def read_source(src, cfg, text_columns: frozenset[str]):
    import pandas as pd

    from raymlops.data.readers import expand_paths, read_file

    if getattr(src, "type", None) == "sql":
        raise SystemExit("the pandas baseline reads file sources only")
    paths = [src.path] if isinstance(src.path, str) else src.path
    files = expand_paths([cfg.resolve_path(p) for p in paths], src.storage_options)
    tables = [t for f in files for t in read_file(f, src.type, storage_options=src.storage_options,
                                                    columns=src.columns, text_columns=text_columns,
                                                    delimiter=src.csv.delimiter, null_values=src.csv.null_values)]
    frames = [t.to_pandas() for t in tables]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def pandas_pipeline(cfg, scratch: Path) -> dict[str, Any]:
    """Run the data stage's work; seconds per step, row counts and the fitted features (to compare)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raymlops.data import features as feats
    from raymlops.data import versioning
    from raymlops.data.readers import PROVENANCE_COLUMNS
    from raymlops.data.splits import SPLITS, assign_splits
    from raymlops.data.validation import check_batch, coerce_frame, merge_partials

    seconds: dict[str, float] = {}
    t0 = t = time.perf_counter()
    text_columns = frozenset(cfg.validation.columns.keys())
    by_name = {s.name: s for s in cfg.data.sources}
    bases = [read_source(by_name[n], cfg, text_columns) for n in cfg.data.base or [cfg.data.sources[0].name]]
    frame = pd.concat(bases, ignore_index=True) if len(bases) > 1 else bases[0]
    del bases
    for join in cfg.data.joins:
        right = read_source(by_name[join.right], cfg, text_columns).drop(columns=list(PROVENANCE_COLUMNS),
                                                                          errors="ignore")
        right = right.sort_values(list(right.columns), kind="stable").drop_duplicates(subset=join.keys, keep="first")
        frame = frame.merge(right, how=join.how, on=join.keys, suffixes=("", f"_{join.right}"), sort=False)
    rows_in = len(frame)
    seconds["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    report = merge_partials([check_batch(frame, cfg.validation)], cfg.validation)
    report.write_json(scratch / "validation.json")
    seconds["validate"] = time.perf_counter() - t
    if not report.passed:
        raise SystemExit(f"pandas baseline: {report.summary()}")

    t = time.perf_counter()
    clean = coerce_frame(frame, cfg.validation)
    del frame
    drop = [c for c in (*PROVENANCE_COLUMNS, *cfg.data.cleaning.drop_columns) if c in clean.columns]
    clean = clean.drop(columns=drop).reset_index(drop=True)
    if cfg.data.cleaning.drop_duplicates:
        clean = clean.drop_duplicates(ignore_index=True)
    table = pa.Table.from_pandas(clean, preserve_index=False)
    schema = {n: str(ty) for n, ty in zip(table.schema.names, table.schema.types, strict=True)}
    snap_dir = scratch / versioning.combine_fingerprint([versioning.fingerprint_partial(clean)], schema)
    snap_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, snap_dir / "part-0.parquet")
    snapshot_rows = len(clean)
    del clean, table
    seconds["snapshot"] = time.perf_counter() - t

    t = time.perf_counter()
    data = pd.read_parquet(snap_dir)  # raymlops splits and transforms what it reads back from the snapshot
    split = assign_splits(data, cfg.data.split)
    parts = {name: data[split == name] for name in SPLITS}
    fitted = feats.fit_features([feats.fit_partial(parts["train"], cfg.features)], cfg.features)
    fitted.save(scratch / "features.json")
    seconds["features"] = time.perf_counter() - t

    t = time.perf_counter()
    transformed = {name: fitted.transform_frame(p, keep=[fitted.target]) for name, p in parts.items() if len(p)}
    seconds["transform"] = time.perf_counter() - t
    return {"seconds": time.perf_counter() - t0, "steps": seconds, "rows_in": rows_in,
            "rows_out": sum(len(f) for f in transformed.values()), "snapshot_rows": snapshot_rows,
            "split_rows": {name: len(p) for name, p in parts.items()}, "features": fitted.to_dict()}
