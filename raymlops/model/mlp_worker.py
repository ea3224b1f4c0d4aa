"""The MLP family's per-worker Ray Train loop: DDP over data shards, a checkpoint every epoch, resume, early stopping.

Every epoch each worker trains on its shard of ``train``, the validation loss is summed over all
workers (so every worker takes the same early-stopping decision), and rank 0 reports a checkpoint
holding the current weights, the best weights so far, the optimizer and the epoch. After a worker
failure, or when a run with the same name is started again, training resumes from the latest checkpoint.
Weights and the optimizer's tensors are stored as safetensors, the optimizer's settings as JSON: nothing
is pickled, so nothing needs unpickling.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.data.collate_fn import NumpyBatchCollateFn
from safetensors.torch import load_file, save_file

from raymlops.model import checkpointing
from raymlops.model.checkpointing import BEST_WEIGHTS
from raymlops.model.contract import STATE, ModelSpec, WorkerConfig
from raymlops.model.metrics import binary_auc
from raymlops.model.mlp import build_model, loss_for, target_tensor


WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"  # the optimizer's tensors; its settings in OPTIMIZER_SETTINGS
OPTIMIZER_SETTINGS = "optimizer.json"
# In local mode (the loop in the driver's process) the splits are read through Ray Data once and kept as
# tensors when they fit in this many bytes; every epoch then draws its own permutation of them instead of
# starting a new read (which cost more than the epoch itself on small data). Bigger splits, and every
# Ray Train worker, stream through Ray Data every epoch: a worker holding its shard would train on after
# Ray died under it, and such a run must fail and say so (tests/reliability/test_driver_killed.py).
IN_MEMORY_MAX_BYTES = 512 * 2**20

Tensors = tuple[torch.Tensor, ...]  # (numeric, categorical, target[, weights])


class _Collate(NumpyBatchCollateFn):
    """A dict of numpy columns -> (numeric float32, categorical int64, target float32) tensors, and the
    rows' weights (float32) as a fourth when ``weight`` names their column. A class of Ray Data's collate
    kinds, not a closure: Ray 2.47+ warns once per epoch about a plain function."""

    def __init__(self, spec: ModelSpec, target: str, weight: str | None = None) -> None:
        self.spec, self.target, self.weight = spec, target, weight

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        spec, n = self.spec, len(batch[self.target])
        numeric = (np.stack([batch[c].astype(np.float32) for c in spec.numeric], axis=1)
                   if spec.numeric else np.zeros((n, 0), np.float32))
        categorical = (np.stack([batch[c].astype(np.int64) for c in spec.categorical], axis=1)
                       if spec.categorical else np.zeros((n, 0), np.int64))
        out = (torch.from_numpy(numeric), torch.from_numpy(categorical), target_tensor(batch[self.target], spec))
        if self.weight:
            out += (torch.from_numpy(np.array(batch[self.weight], dtype=np.float32)),)  # a copy: Ray's is read-only
        return out


def collate(spec: ModelSpec, target: str, weight: str | None = None) -> _Collate:
    """The collate callable of one model spec (see ``_Collate``)."""
    return _Collate(spec, target, weight)


def weighted_batch_loss(per_row: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted sum of a batch's per-row losses (a regression's [n, 1] rows summed first)."""
    return (per_row.reshape(len(weights), -1).sum(dim=1) * weights).sum()


def shard_tensors(shard: Any, fn: _Collate, max_bytes: int = IN_MEMORY_MAX_BYTES) -> Tensors | None:
    """A whole split as ``fn``'s tensors (numeric, categorical, target[, weights]), read in one pass in its
    order; None once it passes ``max_bytes`` (the caller then streams it every epoch). Local mode only
    (``IN_MEMORY_MAX_BYTES``)."""
    parts: list[Tensors] = []
    size = 0
    for batch in shard.iter_torch_batches(batch_size=8192, collate_fn=fn):
        size += sum(t.element_size() * t.nelement() for t in batch)
        if size > max_bytes:
            return None
        parts.append(batch)
    if not parts:
        return None
    return tuple(torch.cat(column) for column in zip(*parts))  # type: ignore[return-value]


def minibatches(tensors: Tensors, batch_size: int, seed: int | None = None) -> Iterator[Tensors]:
    """``tensors`` in batches of ``batch_size`` rows: shuffled by a permutation seeded with ``seed`` (the
    same epoch of a resumed run draws the same one), or in order when ``seed`` is None."""
    n = len(tensors[2])
    order = None if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for start in range(0, n, batch_size):
        if order is None:
            yield tuple(t[start:start + batch_size] for t in tensors)  # type: ignore[misc]
        else:
            rows = order[start:start + batch_size]
            yield tuple(t[rows] for t in tensors)  # type: ignore[misc]


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The optimizer's state as safetensors (its tensors) and JSON (its settings and any plain values): no
    pickle to write or read, and a tenth of ``torch.save``'s time, which every epoch of a small run pays."""
    state = optimizer.state_dict()
    tensors, plain = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}/{key}"] = value
    save_file(tensors, str(folder / OPTIMIZER))
    (folder / OPTIMIZER_SETTINGS).write_text(json.dumps({"param_groups": state["param_groups"], "plain": plain}))


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Restore what ``save_optimizer`` wrote into ``optimizer`` (built for the same parameters)."""
    saved = json.loads((folder / OPTIMIZER_SETTINGS).read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in [*load_file(str(folder / OPTIMIZER)).items(), *saved["plain"].items()]:
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in saved["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum across workers. The tensor lives on the training device: with ``use_gpu`` Ray's process group
    is NCCL, which refuses CPU tensors (gloo on CPU)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _gather(arr: np.ndarray) -> np.ndarray:
    if dist.is_available() and dist.is_initialized():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, arr)
        return np.concatenate(parts)
    return arr


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    config = WorkerConfig.of(loop_config)
    spec, mcfg, tcfg, target = config.spec, config.model, config.training, config.target
    classification = spec.task == "classification"
    torch.manual_seed(tcfg.seed)
    np.random.seed(tcfg.seed)

    device = ray.train.torch.get_device()
    model = build_model(spec, mcfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.learning_rate)
    start_epoch, best, best_state, bad_epochs, history = 0, math.inf, None, 0, []

    checkpoint = checkpointing.resume_checkpoint(config.local_checkpoint_dir)
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.load_state_dict(load_file(os.path.join(d, WEIGHTS)))
            best_state = load_file(os.path.join(d, BEST_WEIGHTS))
            load_optimizer(optimizer, Path(d))
            state = json.loads(Path(d, STATE).read_text())
            start_epoch, best, bad_epochs = state["epoch"] + 1, state["best_val_loss"], state["bad_epochs"]
            history = state.get("history", [])
    model = ray.train.torch.prepare_model(model)
    loss_fn = loss_for(spec.task, reduction="sum")
    row_loss = loss_for(spec.task, reduction="none") if config.weight else None  # features.weight_column
    use_amp = device.type == "cuda"
    fn, train_fn = collate(spec, target), collate(spec, target, config.weight)  # validation rows count alike
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("validation")
    in_driver = config.local_checkpoint_dir is not None  # set in local mode only
    train_tensors = shard_tensors(train_shard, train_fn) if in_driver and start_epoch < tcfg.epochs else None
    val_tensors = shard_tensors(val_shard, fn) if train_tensors is not None else None

    def train_batches(epoch: int):
        if train_tensors is not None:
            return minibatches(train_tensors, tcfg.batch_size, seed=tcfg.seed + epoch)
        return train_shard.iter_torch_batches(
            batch_size=tcfg.batch_size, collate_fn=train_fn, local_shuffle_buffer_size=4 * tcfg.batch_size,
            local_shuffle_seed=tcfg.seed + epoch)

    def val_batches():
        if val_tensors is not None:
            return minibatches(val_tensors, 4096)
        return val_shard.iter_torch_batches(batch_size=4096, collate_fn=fn)

    for epoch in range(start_epoch, tcfg.epochs):
        model.train()
        total, count, weight_total = 0.0, 0, 0.0
        for numeric, categorical, y, *weights in train_batches(epoch):
            numeric, categorical, y = numeric.to(device), categorical.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(numeric, categorical)
            if row_loss is None:
                loss = loss_fn(out.float(), y)
                (loss / max(1, len(y))).backward()
                weight_total += len(y)
            else:  # the batch's weighted mean loss
                w = weights[0].to(device)
                loss = weighted_batch_loss(row_loss(out.float(), y), w)
                (loss / w.sum().clamp_min(1e-12)).backward()
                weight_total += float(w.sum().item())
            optimizer.step()
            total += loss.item()
            count += len(y)

        model.eval()
        val_total, val_count, scores, labels = 0.0, 0, [], []
        with torch.no_grad():
            for numeric, categorical, y in val_batches():
                numeric, categorical, y = numeric.to(device), categorical.to(device), y.to(device)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = model(numeric, categorical).float()
                val_total += loss_fn(out, y).item()
                val_count += len(y)
                scores.append(torch.sigmoid(out).cpu().numpy() if classification else out.cpu().numpy())
                labels.append(y.cpu().numpy())
        total, count, weight_total, val_total, val_count = _all_sum(
            [total, count, weight_total, val_total, val_count], device)
        train_loss = total / weight_total if weight_total > 0 else 0.0
        val_loss = val_total / max(1, val_count)
        # started_at_epoch > 0 marks epochs run after resuming from a checkpoint (worker, node or driver lost).
        metrics: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                   "train_rows": int(count), "started_at_epoch": start_epoch}
        if classification:
            y_all = _gather(np.concatenate(labels) if labels else np.zeros(0, np.float32))
            s_all = _gather(np.concatenate(scores) if scores else np.zeros(0, np.float32))
            metrics["val_auc"] = binary_auc(y_all, s_all)
        if val_loss < best - 1e-7 or config.fixed_rounds:  # a refit keeps its last epoch
            best, bad_epochs, best_state = val_loss, 0, _cpu_state(model)
        else:
            bad_epochs += 1
        metrics["best_val_loss"] = best
        # Lets the tuner free this worker group's placement group if Tune stops the trial (ray#54305).
        metrics["placement_group_id"] = ray.get_runtime_context().get_placement_group_id() or ""
        stop = bad_epochs >= tcfg.early_stopping_patience
        metrics["early_stopped"] = stop and epoch < tcfg.epochs - 1
        history.append(metrics)

        def write(folder: Path) -> None:
            save_file(_cpu_state(model), str(folder / WEIGHTS))
            save_file(best_state or _cpu_state(model), str(folder / BEST_WEIGHTS))
            save_optimizer(optimizer, folder)
            (folder / STATE).write_text(json.dumps({"epoch": epoch, "best_val_loss": best, "bad_epochs": bad_epochs,
                                                    "metrics": metrics, "history": history}))

        checkpointing.report(config.local_checkpoint_dir, epoch, metrics, write)
        if stop:
            break
