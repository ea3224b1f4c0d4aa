"""The MLP family's entry point, free of torch: serving a built-in MLP never imports it.

Training and user builders need torch (``model/mlp.py``, ``model/mlp_worker.py``, imported on use).
A package of the built-in ``TabularMLP`` is scored here with numpy: the same layers (embeddings,
Linear + ReLU, dropout off at inference) over the same float32 weights read from safetensors, so a
replica starts without torch's import (~3 s of a replacement replica's ~9 s on a 2-core machine) and
without its memory. ``tests/unit/test_mlp_numpy.py`` holds its scores to torch's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from raymlops.config import DEFAULT_SEARCH_SPACES, TUNABLE_BY_FAMILY, ModelConfig
from raymlops.errors import ModelPackageError
from raymlops.model.checkpointing import BEST_WEIGHTS
from raymlops.model.contract import Features, ModelSpec

BUILTIN_BUILDERS = ("mlp",)


def numpy_inputs(features: Features, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(numeric float32 [n, k], categorical int64 [n, m]) of transformed features (a frame or arrays)."""
    n = len(next(iter(features.values()))) if isinstance(features, dict) else len(features)
    numeric = (np.stack([np.asarray(features[c], dtype=np.float32) for c in spec.numeric], 1)
               if spec.numeric else np.zeros((n, 0), np.float32))
    categorical = (np.stack([np.asarray(features[c], dtype=np.int64) for c in spec.categorical], 1)
                   if spec.categorical else np.zeros((n, 0), np.int64))
    return numeric, categorical


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of logits [n, K], rows summing to 1 (shifted by the row max: no overflow)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class NumpyMLPPredictor:
    """The built-in TabularMLP's forward pass in numpy (float32), from its state dict."""

    def __init__(self, weights: dict[str, np.ndarray], spec: ModelSpec, cfg: ModelConfig, where: str) -> None:
        self.spec = spec
        self.embeddings = [weights.get(f"embeddings.{i}.weight") for i in range(len(spec.cardinalities))]
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        index = 0
        for _ in range(len(cfg.hidden_sizes) + 1):  # Sequential: Linear, ReLU, Dropout per hidden layer, then Linear
            w, b = weights.get(f"mlp.{index}.weight"), weights.get(f"mlp.{index}.bias")
            if w is None or b is None:
                raise ModelPackageError(f"{where}: weights do not fit the model: no layer mlp.{index}")
            self.layers.append((np.ascontiguousarray(w.T, dtype=np.float32), b.astype(np.float32)))
            index += 3
        width = len(spec.numeric)
        for i, (card, emb) in enumerate(zip(spec.cardinalities, self.embeddings)):
            if emb is None or emb.ndim != 2 or emb.shape[0] != card:
                raise ModelPackageError(f"{where}: weights do not fit the model: embedding {i} is "
                                        f"{None if emb is None else emb.shape}, the spec has {card} ids")
            width += emb.shape[1]
        for (w, b), out in zip(self.layers, [*cfg.hidden_sizes, spec.outputs]):
            if w.shape != (width, out) or b.shape != (out,):
                raise ModelPackageError(f"{where}: weights do not fit the model: a layer of shape "
                                        f"{w.shape[::-1]} where the config makes ({out}, {width})")
            width = out
        expected = {f"embeddings.{i}.weight" for i in range(len(self.embeddings))}
        expected |= {f"mlp.{3 * j}.{p}" for j in range(len(self.layers)) for p in ("weight", "bias")}
        if set(weights) != expected:
            raise ModelPackageError(f"{where}: weights do not fit the model: unexpected tensors "
                                    f"{sorted(set(weights) - expected)[:5]}")

    def predict(self, features: Features) -> np.ndarray:
        numeric, categorical = numpy_inputs(features, self.spec)
        x = np.concatenate([numeric] + [emb[categorical[:, i]] for i, emb in enumerate(self.embeddings)], axis=1)
        for j, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if j < len(self.layers) - 1:
                np.maximum(x, 0, out=x)
        if self.spec.task == "multiclass":
            return softmax(x.astype(np.float64))
        out = x[:, 0].astype(np.float32)
        if self.spec.task == "classification":
            return (1.0 / (1.0 + np.exp(-out.astype(np.float64))))
        return out.astype(np.float64) * self.spec.target_std + self.spec.target_mean


class MLPFamily:
    """Ray Train's TorchTrainer (DDP), weights as safetensors."""

    name = "mlp"
    model_file = "weights.safetensors"
    tunable = TUNABLE_BY_FAMILY["mlp"]
    split_validation = True

    def fit_local(self, spec, model, training, train, validation, target):
        from raymlops.model.mlp import fit_local

        return fit_local(spec, model, training, train, validation, target)

    def worker(self) -> Callable[[dict[str, Any]], None]:
        from raymlops.model.mlp_worker import train_loop_per_worker

        return train_loop_per_worker

    def trainer_class(self) -> type:
        from ray.train.torch import TorchTrainer

        return TorchTrainer

    def checkpoint_files(self, checkpoint_dir: Path) -> dict[str, Path]:
        return {self.model_file: Path(checkpoint_dir) / BEST_WEIGHTS}

    def load(self, package_dir: Path, manifest: dict[str, Any], spec: ModelSpec) -> Any:
        cfg = ModelConfig(**manifest["model_config"])
        if cfg.builder not in BUILTIN_BUILDERS:  # a user's module (trusted by the config): torch runs it
            from raymlops.model.mlp import load_module_predictor

            return load_module_predictor(Path(package_dir) / self.model_file, spec, cfg)
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(package_dir) / self.model_file
        try:
            weights = load_file(str(path))
        except SafetensorError as exc:  # e.g. a pickle (torch.save) put in its place: never unpickled
            raise ModelPackageError(f"{package_dir}: {self.model_file} is not a safetensors file ({exc}); raymlops "
                                    "loads weights only as safetensors and never unpickles a model") from exc
        return NumpyMLPPredictor(weights, spec, cfg, str(package_dir))

    def default_search_space(self) -> dict[str, dict[str, Any]]:
        return DEFAULT_SEARCH_SPACES["mlp"]


FAMILY = MLPFamily()
