"""``data``: where rows come from (files, SQL), how sources join, cleaning, and the split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from raymlops.config.base import StrictModel, url_holds_password


class CsvOptions(StrictModel):
    delimiter: str = Field(",", description="Field delimiter, one character.", min_length=1, max_length=1)
    null_values: list[str] = Field(
        default_factory=lambda: ["", "NA", "N/A", "NULL", "null", "NaN", "nan"],
        description="Cell texts read as missing.",
    )


class FileSourceConfig(StrictModel):
    """Files read in parallel, one Ray task per file; each row keeps its file and row number for reports."""

    type: Literal["csv", "parquet", "json"] = Field(description="File format; json means JSON lines.")
    name: str = Field(description="Name other parts of the config use to refer to this source.")
    path: str | list[str] = Field(
        description="A path, glob, or object-store URI (s3://bucket/key, gs://...), or a list of them. "
        "Relative paths are resolved against the config file's folder."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="Options for the pyarrow filesystem of a URI, e.g. endpoint_override, region, scheme.",
    )
    columns: list[str] | None = Field(None, description="Read only these columns (default: all).")
    csv: CsvOptions = Field(default_factory=CsvOptions, description="CSV parsing options.")


class SqlSourceConfig(StrictModel):
    """A query read with ``ray.data.read_sql``: SQLite or PostgreSQL."""

    type: Literal["sql"] = Field(description="A SQL query.")
    name: str = Field(description="Name other parts of the config use to refer to this source.")
    url: str = Field(
        description="sqlite:///relative/or/absolute.db or postgresql://user@host:port/dbname. "
        "Never put a password here: use password_env."
    )
    query: str = Field(description="The SELECT statement to run.")
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the database password."
    )

    @model_validator(mode="after")
    def _no_password_in_url(self) -> SqlSourceConfig:
        """A password in the URL would land in configs, logs and MLflow params; refused at load time."""
        if url_holds_password(self.url):
            raise ValueError(f"source {self.name!r}: the url holds a password; remove it and name the environment "
                             "variable that holds it in password_env")
        return self


SourceConfig = Annotated[FileSourceConfig | SqlSourceConfig, Field(discriminator="type")]


class JoinConfig(StrictModel):
    """A broadcast join of a small source onto the base table (the right side must fit in memory)."""

    right: str = Field(description="Name of the source joined onto the base table.")
    keys: list[str] = Field(min_length=1, description="Key columns present in both tables.")
    how: Literal["left", "inner"] = Field("left", description="left keeps unmatched base rows.")


class CleaningConfig(StrictModel):
    drop_duplicates: bool = Field(True, description="Drop exact duplicate rows (all columns equal).")
    drop_columns: list[str] = Field(default_factory=list, description="Columns removed before the snapshot.")


class RandomSplitConfig(StrictModel):
    """Rows go to splits by a seeded hash of their content: stable whatever the partitioning."""

    type: Literal["random"] = "random"
    seed: int = Field(0, description="Seed of the split hash.")
    train: float = Field(0.8, gt=0, lt=1, description="Share of rows in the training split.")
    validation: float = Field(0.1, ge=0, lt=1, description="Share of rows in the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Share of rows in the test split.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> RandomSplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        return self


class TimeSplitConfig(StrictModel):
    """Later periods are held out: train < validation_start <= validation < test_start <= test."""

    type: Literal["time"] = "time"
    column: str = Field(description="A timestamp or date column.")
    validation_start: str = Field(description="ISO date/time where the validation split begins.")
    test_start: str = Field(description="ISO date/time where the test split begins.")


SplitConfig = Annotated[RandomSplitConfig | TimeSplitConfig, Field(discriminator="type")]


class DataConfig(StrictModel):
    sources: list[SourceConfig] = Field(min_length=1, description="Where the data comes from.")
    base: list[str] | None = Field(
        None, description="Sources unioned into the base table (default: the first source)."
    )
    joins: list[JoinConfig] = Field(default_factory=list, description="Sources joined onto the base table.")
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Cleaning before the snapshot.")
    split: SplitConfig = Field(default_factory=RandomSplitConfig, description="How rows are split.")
    in_process_max_mb: float = Field(
        64.0, ge=0, description="File sources up to this many MiB in all (as stored) are read and prepared in "
        "the driver, with the same batch functions and the same snapshot as through Ray Data, which starts "
        "more slowly than small data takes; 0 always uses Ray Data. SQL sources always use Ray Data.")
