"""Models: the contract every family implements (``contract``), the families (``mlp``: torch,
``lgbm``: LightGBM, ``xgb``: XGBoost) and what they share (``boosting``). Packaging, scoring, serving
and training reach a family only through ``get_family(name)``."""

from raymlops.model.contract import ModelFamily, ModelSpec, Predictor, feature_matrix, get_family

__all__ = ["ModelFamily", "ModelSpec", "Predictor", "feature_matrix", "get_family"]
