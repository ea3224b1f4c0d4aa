"""``validation``: what the data must look like (per-column expectations, row counts)."""

from __future__ import annotations


from pydantic import Field

from raymlops.config.base import ColumnType, StrictModel


class ColumnExpectation(StrictModel):
    type: ColumnType | None = Field(None, description="Expected type; cells that cannot be read as it fail.")
    nullable: bool = Field(True, description="Whether missing values are allowed at all.")
    max_null_fraction: float | None = Field(None, ge=0, le=1, description="Most missing values allowed, 0..1.")
    min: float | str | None = Field(None, description="Smallest allowed value (inclusive).")
    max: float | str | None = Field(None, description="Largest allowed value (inclusive).")
    allowed: list[str | int | float | bool] | None = Field(None, description="The only values allowed.")
    unique: bool = Field(False, description="No value may appear twice (over the whole dataset).")
    request_bounds: bool = Field(
        False, description="Refuse requests outside min/max/allowed too (HTTP 422). By default those bound the "
        "data a model trains on only: a request outside them is served, and the monitor measures it as drift.")


class RowCountExpectation(StrictModel):
    min: int | None = Field(None, ge=0, description="Fewest rows accepted.")
    max: int | None = Field(None, ge=0, description="Most rows accepted.")


class ValidationConfig(StrictModel):
    columns: dict[str, ColumnExpectation] = Field(default_factory=dict, description="Expectations per column.")
    row_count: RowCountExpectation = Field(default_factory=RowCountExpectation, description="Row count bounds.")
    require_declared_columns: bool = Field(True, description="A declared column missing from the data fails.")
    max_examples: int = Field(5, ge=1, le=100, description="Example rows kept per failed check.")
