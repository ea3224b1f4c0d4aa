"""The built-in MLP is served with numpy (no torch in a replica): its scores are torch's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raymlops.config import ModelConfig
from raymlops.errors import ModelPackageError
from raymlops.model.contract import ModelSpec
from raymlops.model.mlp import MLPPredictor, build_model
from raymlops.model.mlp_family import NumpyMLPPredictor


def _spec(task: str) -> ModelSpec:
    return ModelSpec(task=task, numeric=["a", "b", "c"], categorical=["x", "y"], cardinalities=[5, 40],
                     **({"target_mean": 1500.0, "target_std": 250.0} if task == "regression" else {}))


def _features(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"a": rng.normal(size=n).astype(np.float32), "b": rng.normal(size=n).astype(np.float32),
            "c": rng.normal(size=n).astype(np.float32), "x": rng.integers(0, 5, n), "y": rng.integers(0, 40, n)}


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("hidden", [[32, 16], [8], []])
def test_numpy_forward_matches_torch(task, hidden):
    torch.manual_seed(0)
    spec, cfg = _spec(task), ModelConfig(hidden_sizes=hidden, dropout=0.3, embedding_dim=6)
    module = build_model(spec, cfg).eval()
    ours = NumpyMLPPredictor({k: v.numpy() for k, v in module.state_dict().items()}, spec, cfg, "pkg")
    features = _features(500, np.random.default_rng(1))
    expected = MLPPredictor(module, spec).predict(features)
    got = ours.predict(features)
    assert got.dtype == np.float64 and got.shape == (500,)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6 if task == "classification" else 1e-2)


def test_weights_of_another_shape_are_refused_naming_the_package():
    torch.manual_seed(0)
    spec = _spec("classification")
    module = build_model(spec, ModelConfig(hidden_sizes=[32, 16])).eval()
    weights = {k: v.numpy() for k, v in module.state_dict().items()}
    with pytest.raises(ModelPackageError, match="pkg: weights do not fit the model"):
        NumpyMLPPredictor(weights, spec, ModelConfig(hidden_sizes=[64, 16]), "pkg")
    with pytest.raises(ModelPackageError, match="weights do not fit the model"):
        NumpyMLPPredictor(weights, spec, ModelConfig(hidden_sizes=[32]), "pkg")
