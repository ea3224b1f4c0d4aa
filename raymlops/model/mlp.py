"""The torch MLP family: the tabular MLP (or a user's own builder, plugged in by import path).

A builder has the signature ``build(spec: ModelSpec, cfg: ModelConfig) -> torch.nn.Module`` and the
module's ``forward(numeric, categorical)`` takes a float tensor ``[batch, len(spec.numeric)]`` and a
long tensor ``[batch, len(spec.categorical)]`` (ids, 0 = unknown) and returns ``[batch]`` (a logit for
classification, the value for regression), or for multiclass ``[batch, spec.outputs]`` (one logit per
class of ``spec.classes``). Example config: ``model: {builder: "mypkg.models:build"}``.

Example::

    def build(spec, cfg):
        return MyNet(len(spec.numeric), spec.cardinalities)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from raymlops.config import ModelConfig
from raymlops.errors import ConfigError, ModelPackageError
from raymlops.model.contract import Features, ModelSpec


class TabularMLP(nn.Module):
    """Embeddings for categorical ids, concatenated with numeric inputs, then an MLP to one output."""

    def __init__(self, spec: ModelSpec, cfg: ModelConfig) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(card, min(cfg.embedding_dim, max(2, card))) for card in spec.cardinalities)
        width = len(spec.numeric) + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for hidden in cfg.hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, spec.outputs))
        self.mlp = nn.Sequential(*layers)
        self.multiclass = spec.task == "multiclass"

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        out = self.mlp(torch.cat(parts, dim=1))
        return out if self.multiclass else out.squeeze(-1)


def build_mlp(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    return TabularMLP(spec, cfg)


BUILDERS: dict[str, Callable[[ModelSpec, ModelConfig], nn.Module]] = {"mlp": build_mlp}


def resolve_builder(name: str) -> Callable[[ModelSpec, ModelConfig], nn.Module]:
    """A built-in builder by name, or ``"package.module:function"``."""
    if name in BUILDERS:
        return BUILDERS[name]
    if ":" not in name:
        close = difflib.get_close_matches(name, BUILDERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"model.builder: unknown builder {name!r}; {hint}available: {sorted(BUILDERS)} "
                          "or 'package.module:function'")
    module_name, attr = name.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model.builder: cannot import {name!r}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"model.builder: {name!r} is not callable")
    return fn


def build_model(spec: ModelSpec, cfg: ModelConfig) -> nn.Module:
    model = resolve_builder(cfg.builder)(spec, cfg)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.builder {cfg.builder!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def model_inputs(features: pd.DataFrame | dict[str, np.ndarray], spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(numeric float32, categorical int64) tensors of transformed features (a frame, or the column arrays
    of ``FittedFeatures.transform_records``), as the module takes them."""
    n = len(next(iter(features.values()))) if isinstance(features, dict) else len(features)
    numeric = (np.stack([np.asarray(features[c], dtype=np.float32) for c in spec.numeric], 1)
               if spec.numeric else np.zeros((n, 0), np.float32))
    categorical = (np.stack([np.asarray(features[c], dtype=np.int64) for c in spec.categorical], 1)
                   if spec.categorical else np.zeros((n, 0), np.int64))
    return torch.from_numpy(numeric), torch.from_numpy(categorical)


def loss_for(task: str, reduction: str = "mean") -> nn.Module:
    """The training loss of a task on the module's raw outputs (logits, or the standardised value)."""
    if task == "multiclass":
        return nn.CrossEntropyLoss(reduction=reduction)
    return nn.BCEWithLogitsLoss(reduction=reduction) if task == "classification" else nn.MSELoss(reduction=reduction)


def target_tensor(y: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """The loss's target: class indices (int64) for multiclass, 0/1 for classification, the standardised
    value for regression (fitted on the training split; predictions are mapped back)."""
    if spec.task == "multiclass":
        return torch.from_numpy(np.asarray(y).astype(np.int64))
    y = np.asarray(y, dtype=np.float32)
    if spec.task == "regression":
        y = (y - spec.target_mean) / spec.target_std
    return torch.from_numpy(y.astype(np.float32))


class MLPPredictor:
    """A torch module in eval mode; sigmoid for classification, the target's scaling undone for regression."""

    def __init__(self, module: nn.Module, spec: ModelSpec) -> None:
        self.module, self.spec = module, spec

    def predict(self, features: Features) -> np.ndarray:
        numeric, categorical = model_inputs(features, self.spec)
        with torch.no_grad():
            out = self.module(numeric, categorical)
        if self.spec.task == "multiclass":
            return torch.softmax(out.double(), dim=1).numpy()
        if self.spec.task == "classification":
            return torch.sigmoid(out).numpy().astype(np.float64)
        return out.numpy().astype(np.float64) * self.spec.target_std + self.spec.target_mean


def fit_local(spec: ModelSpec, model: dict[str, Any], training: dict[str, Any], train: pd.DataFrame,
              validation: pd.DataFrame, target: str) -> MLPPredictor:
    """The same network fitted in this process (no Ray, one thread of batches): for baselines and small
    jobs. Adam, the configured epochs, batch size and early-stopping patience; the best epoch is kept."""
    import copy

    torch.manual_seed(training.get("seed", 0))
    net = build_model(spec, ModelConfig(**model))
    optimizer = torch.optim.Adam(net.parameters(), lr=training["learning_rate"])
    loss_fn = loss_for(spec.task)

    def tensors(frame: pd.DataFrame):
        return (*model_inputs(frame, spec), target_tensor(frame[target].to_numpy(), spec))

    xn, xc, y = tensors(train)
    vn, vc, vy = tensors(validation)
    best, best_state, bad = float("inf"), copy.deepcopy(net.state_dict()), 0
    generator = torch.Generator().manual_seed(training.get("seed", 0))
    for _ in range(training["epochs"]):
        net.train()
        for idx in torch.randperm(len(y), generator=generator).split(training["batch_size"]):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(xn[idx], xc[idx]), y[idx]).backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            val = float(loss_fn(net(vn, vc), vy))
        if val < best - 1e-7:
            best, best_state, bad = val, copy.deepcopy(net.state_dict()), 0
        else:
            bad += 1
            if bad >= training["early_stopping_patience"]:
                break
    net.load_state_dict(best_state)
    return MLPPredictor(net.eval(), spec)


def load_module_predictor(path: Path, spec: ModelSpec, cfg: ModelConfig) -> MLPPredictor:
    """A package's weights in the module its (trusted) builder makes: the path for user builders."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    module = build_model(spec, cfg)
    try:
        weights = load_file(str(path))
    except SafetensorError as exc:  # e.g. a pickle (torch.save) put in its place: never unpickled
        raise ModelPackageError(f"{path.parent}: {path.name} is not a safetensors file ({exc}); raymlops "
                                "loads weights only as safetensors and never unpickles a model") from exc
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelPackageError(f"{path.parent}: weights do not fit the model: {exc}") from exc
    module.eval()
    return MLPPredictor(module, spec)


