"""``features``: the target and the input columns, and how each becomes numbers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raymlops.config.base import StrictModel


class NumericFeature(StrictModel):
    column: str = Field(description="Input column (raw or derived).")
    impute: Literal["mean", "zero"] = Field("mean", description="Value used for missing cells.")
    scale: Literal["standard", "none"] = Field("standard", description="Standardise with the training mean/std.")


class CategoricalFeature(StrictModel):
    column: str = Field(description="Input column (raw or derived).")
    encoding: Literal["index", "onehot"] = Field(
        "index", description="index: integer ids for embeddings (0 = unknown); onehot: one column per category."
    )
    max_categories: int = Field(100, ge=1, description="Most frequent categories kept; the rest map to unknown.")
    min_frequency: int = Field(1, ge=1, description="Categories seen fewer times in training map to unknown.")


class DerivedFeature(StrictModel):
    name: str = Field(description="Name of the new column.")
    source: str = Field(description="A timestamp column it is derived from.")
    kind: Literal["hour", "day_of_week", "month", "day_of_year"] = Field(description="What to extract.")


class FeaturesConfig(StrictModel):
    target: str = Field(description="The label column.")
    target_classes: list[str] = Field(
        default_factory=list,
        description="A classifier's class names in the order the model numbers them (class i is the label value "
                    "target_classes[i]; the HTTP response names them and /v1/feedback takes them). Optional: "
                    "without it the names are fitted from the training split's target (numerically for "
                    "integers, False before True, else alphabetically), and a binary target labelled 0/1 "
                    "keeps its numbers. For model.task classification give two, negative then positive "
                    "(the score is the second's probability); for multiclass three or more.")
    numeric: list[NumericFeature] = Field(default_factory=list, description="Numeric inputs.")
    categorical: list[CategoricalFeature] = Field(default_factory=list, description="Categorical inputs.")
    derived: list[DerivedFeature] = Field(default_factory=list, description="Columns derived before fitting.")
    weight_column: str | None = Field(
        None, description="A column of per-row training weights (numbers >= 0): each training row counts by "
        "its weight in the loss; validation (early stopping) and test rows count alike. Never a model input. "
        "The closed loop sets it for a recency-weighted retrain (retraining.half_life_days).")
