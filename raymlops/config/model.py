"""``model``: the model family (a tagged union on ``family``) and its settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from raymlops.config.base import StrictModel


class BaseModelConfig(StrictModel):
    """What every model family shares; each family adds its own hyperparameters."""

    task: Literal["classification", "regression", "multiclass"] = Field(
        "classification", description="What is predicted: classification (binary: labels 0/1, or two class "
                                      "names such as yes/no), multiclass (three or more classes, named or "
                                      "numbered) or regression.")

    def trusted_builders(self) -> tuple[str, ...]:
        """Import paths of code a package of this model may name (only a user's MLP builder)."""
        return ()


class ModelConfig(BaseModelConfig):
    """The torch MLP family (the default): embeddings for categorical ids, then dense layers."""

    family: Literal["mlp"] = Field("mlp", description="Model family: mlp (torch), lightgbm or xgboost.")
    builder: str = Field("mlp", description="'mlp' or a user builder as 'package.module:function'.")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 32], description="Widths of hidden layers.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after each hidden layer.")
    embedding_dim: int = Field(8, ge=1, description="Embedding width of each categorical feature.")

    def trusted_builders(self) -> tuple[str, ...]:
        return (self.builder,)


MLPModelConfig = ModelConfig


class BoostingModelConfig(BaseModelConfig):
    """Gradient-boosted trees: rounds, early stopping on the validation split, checkpoints."""

    num_boost_round: int = Field(1000, ge=1, description="Most boosting rounds.")
    learning_rate: float = Field(0.05, gt=0, le=1, description="Shrinkage of each tree.")
    early_stopping_rounds: int = Field(
        50, ge=1, description="Rounds without a better validation loss before boosting stops.")
    checkpoint_every: int = Field(
        50, ge=1, description="Rounds between checkpoints (and reports to Ray Train/Tune); a killed worker "
                              "resumes from the last one.")


class LightGBMModelConfig(BoostingModelConfig):
    """LightGBM (categorical features split natively; data-parallel over Ray Train workers)."""

    family: Literal["lightgbm"] = Field(description="Model family: mlp (torch), lightgbm or xgboost.")
    num_leaves: int = Field(31, ge=2, description="Most leaves per tree.")
    max_depth: int = Field(-1, description="Most depth per tree (-1: no limit).")
    min_child_samples: int = Field(20, ge=1, description="Fewest rows in a leaf.")
    feature_fraction: float = Field(1.0, gt=0, le=1, description="Share of features tried per tree.")
    bagging_fraction: float = Field(1.0, gt=0, le=1, description="Share of rows per tree (with bagging_freq > 0).")
    bagging_freq: int = Field(0, ge=0, description="Rebag every k rounds (0: no bagging).")
    lambda_l2: float = Field(0.0, ge=0, description="L2 regularisation of leaf values.")
    max_bin: int = Field(255, ge=2, description="Histogram bins per numeric feature.")


class XGBoostModelConfig(BoostingModelConfig):
    """XGBoost (hist trees, categorical features split natively; distributed over Ray Train workers)."""

    family: Literal["xgboost"] = Field(description="Model family: mlp (torch), lightgbm or xgboost.")
    max_depth: int = Field(6, ge=1, description="Most depth per tree.")
    min_child_weight: float = Field(1.0, ge=0, description="Least hessian in a leaf.")
    subsample: float = Field(1.0, gt=0, le=1, description="Share of rows per tree.")
    colsample_bytree: float = Field(1.0, gt=0, le=1, description="Share of features per tree.")
    reg_lambda: float = Field(1.0, ge=0, description="L2 regularisation of leaf values.")
    max_bin: int = Field(256, ge=2, description="Histogram bins per numeric feature.")


AnyModelConfig = Annotated[ModelConfig | LightGBMModelConfig | XGBoostModelConfig, Field(discriminator="family")]


MODEL_CONFIGS: dict[str, type[BaseModelConfig]] = {
    "mlp": ModelConfig, "lightgbm": LightGBMModelConfig, "xgboost": XGBoostModelConfig}
