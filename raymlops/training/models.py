"""Model builders. The built-in is a tabular MLP; a user's own builder plugs in by import path.

A builder has the signature ``build(spec: ModelSpec, cfg: ModelConfig) -> torch.nn.Module`` and the
module's ``forward(numeric, categorical)`` takes a float tensor ``[batch, len(spec.numeric)]`` and a
long tensor ``[batch, len(spec.categorical)]`` (ids, 0 = unknown) and returns ``[batch]`` (a logit for
classification, the value for regression). Example config: ``model: {builder: "mypkg.models:build"}``.

Example::

    def build(spec, cfg):
        return MyNet(len(spec.numeric), spec.cardinalities)
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from raymlops.config import ModelConfig
from raymlops.data.features import FittedFeatures
from raymlops.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """What a model's inputs look like, derived from the fitted features."""

    task: str
    numeric: list[str]
    categorical: list[str]
    cardinalities: list[int]

    @classmethod
    def from_features(cls, fitted: FittedFeatures, task: str) -> ModelSpec:
        numeric = [s.column for s in fitted.numeric]
        categorical, cards = [], []
        for s in fitted.categorical:
            if s.encoding == "index":
                categorical.append(s.column)
                cards.append(s.cardinality)
            else:
                numeric.extend(s.output_columns())
        return cls(task=task, numeric=numeric, categorical=categorical, cardinalities=cards)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1)).squeeze(-1)


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
